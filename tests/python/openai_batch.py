"""A nightly batch as an OpenAI Batch API user runs it, with the official
openai Python client from PyPI pointed at Ferry (base_url .../openai/v1):
upload a JSONL file of 400 requests over two providers' models, create the
batch, poll it to completed, download the output and match every
custom_id; then list (with the client's pagination), cancel, a bad line
(the batch fails with errors, nothing runs), a token without `submit`
(403) and another key's batch (404).

Run by tests/tests/openai_batch.rs, which starts Ferry with fake
providers and passes what it needs in the environment. Exits 0 when every
check passed; prints what failed otherwise.
"""

import json
import os
import sys
import time

import openai
from openai import OpenAI

BASE_URL = os.environ["FERRY_OPENAI_BASE_URL"]
SUBMIT_TOKEN = os.environ["FERRY_SUBMIT_TOKEN"]
READ_TOKEN = os.environ["FERRY_READ_TOKEN"]
OTHER_TOKEN = os.environ["FERRY_OTHER_TOKEN"]
MODELS = os.environ["FERRY_MODELS"].split(",")
SLOW_MODEL = os.environ["FERRY_SLOW_MODEL"]
REQUESTS = 400
FINAL = ("completed", "failed", "expired", "cancelled")


def client(token):
    return OpenAI(base_url=BASE_URL, api_key=token, timeout=30, max_retries=2)


def request_line(custom_id, model, question, **params):
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": question},
        ],
    }
    body.update(params)
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(lines):
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()


def wait(c, batch_id, wanted):
    # A safety net against a hang, not a timing assertion.
    deadline = time.monotonic() + 120
    batch = c.batches.retrieve(batch_id)
    while batch.status not in wanted:
        assert time.monotonic() < deadline, f"batch {batch_id} stuck in {batch.status}"
        time.sleep(0.1)
        batch = c.batches.retrieve(batch_id)
    return batch


def lines_of(c, file_id):
    text = c.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def nightly(c):
    lines = [
        request_line(f"req-{i}", MODELS[i % len(MODELS)], f"question {i}", max_tokens=64, temperature=0.2)
        for i in range(REQUESTS)
    ]
    data = jsonl(lines)
    uploaded = c.files.create(file=("nightly.jsonl", data), purpose="batch")
    assert uploaded.object == "file" and uploaded.purpose == "batch", uploaded
    assert uploaded.bytes == len(data) and uploaded.filename == "nightly.jsonl", uploaded
    assert c.files.retrieve(uploaded.id).id == uploaded.id
    assert c.files.content(uploaded.id).read() == data, "the upload reads back as sent"

    batch = c.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert batch.object == "batch" and batch.input_file_id == uploaded.id, batch
    assert batch.status in ("validating", "in_progress", "completed"), batch
    done = wait(c, batch.id, FINAL)
    assert done.status == "completed", done
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (REQUESTS, REQUESTS, 0), counts
    assert done.error_file_id is None and done.output_file_id, done
    assert done.metadata == {"job": "nightly"}, done.metadata
    assert done.completed_at and done.in_progress_at and done.expires_at, done

    results = {r["custom_id"]: r for r in lines_of(c, done.output_file_id)}
    assert set(results) == {f"req-{i}" for i in range(REQUESTS)}, f"{len(results)} custom_ids"
    for i in range(REQUESTS):
        r = results[f"req-{i}"]
        assert r["error"] is None and r["id"].startswith("batch_req_"), r
        response = r["response"]
        assert response["status_code"] == 200, r
        body = response["body"]
        assert body["object"] == "chat.completion", body
        assert body["model"] == MODELS[i % len(MODELS)], body
        assert body["choices"][0]["message"]["content"] == f"question {i}", body
        assert body["usage"]["total_tokens"] > 0, body
    output_file = c.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output", output_file
    assert output_file.bytes == len(c.files.content(done.output_file_id).read()), output_file
    return uploaded, done


def cancel(c):
    lines = [request_line(f"slow-{i}", SLOW_MODEL, f"slow {i}") for i in range(40)]
    uploaded = c.files.create(file=("slow.jsonl", jsonl(lines)), purpose="batch")
    batch = c.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelling = c.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled"), cancelling
    assert cancelling.cancelling_at, cancelling
    cancelled = wait(c, batch.id, FINAL)
    assert cancelled.status == "cancelled", cancelled
    assert cancelled.cancelled_at, cancelled
    completed = cancelled.request_counts.completed
    assert completed < 40, cancelled.request_counts
    not_run = [e for e in lines_of(c, cancelled.error_file_id) if e["error"]["code"] == "batch_cancelled"]
    assert completed + len(not_run) == 40, (completed, len(not_run))
    if completed:
        assert len(lines_of(c, cancelled.output_file_id)) == completed
    return cancelled


def bad_line(c):
    good = request_line("ok-1", MODELS[0], "fine")
    lines = [
        good,
        dict(request_line("emb-1", MODELS[0], "x"), url="/v1/embeddings"),
        dict(good),  # the same custom_id again
        {"custom_id": "odd-1", "method": "POST", "url": "/v1/chat/completions", "body": {"input": "not a chat"}},
        request_line("unknown-1", "gpt-4o", "x"),
    ]
    uploaded = c.files.create(file=("bad.jsonl", jsonl(lines)), purpose="batch")
    batch = c.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait(c, batch.id, FINAL)
    assert batch.status == "failed" and batch.failed_at, batch
    assert batch.request_counts.total == 0, batch.request_counts
    errors = [(e.line, e.code) for e in batch.errors.data]
    assert errors == [
        (2, "invalid_url"),
        (3, "duplicate_custom_id"),
        (4, "invalid_body"),
        (5, "model_not_found"),
    ], errors
    assert batch.output_file_id is None and batch.error_file_id is None, batch
    return batch


def main():
    c = client(SUBMIT_TOKEN)
    uploaded, nightly_batch = nightly(c)
    cancelled = cancel(c)
    failed = bad_line(c)

    # The client's own pagination (limit, then `after` the last id).
    listed = [b.id for b in c.batches.list(limit=1)]
    assert listed == [failed.id, cancelled.id, nightly_batch.id], listed
    first = c.batches.list(limit=2)
    assert first.has_more and len(first.data) == 2, first
    files = [f.id for f in c.files.list(limit=1)]
    assert len(files) == 3 and files[-1] == uploaded.id, files

    # A token without `submit` (another key, `read` only) lists its own
    # (none) but cannot submit.
    reader = client(READ_TOKEN)
    assert list(reader.batches.list()) == []
    try:
        reader.files.create(file=("x.jsonl", b"{}\n"), purpose="batch")
        raise AssertionError("an upload with a read-only token was accepted")
    except openai.PermissionDeniedError as e:
        assert e.status_code == 403
    try:
        reader.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        raise AssertionError("a batch with a read-only token was accepted")
    except openai.PermissionDeniedError:
        pass

    # Another key sees none of it.
    other = client(OTHER_TOKEN)
    for attempt in (
        lambda: other.batches.retrieve(nightly_batch.id),
        lambda: other.batches.cancel(nightly_batch.id),
        lambda: other.files.retrieve(uploaded.id),
        lambda: other.files.content(nightly_batch.output_file_id),
    ):
        try:
            attempt()
            raise AssertionError("another key's object was found")
        except openai.NotFoundError as e:
            assert e.status_code == 404
    assert list(other.batches.list()) == []

    # A wrong key is refused.
    try:
        client("not-a-token").batches.list()
        raise AssertionError("an unknown token was accepted")
    except openai.AuthenticationError:
        pass

    deleted = c.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id, deleted
    print(f"ok: openai {openai.__version__}, {REQUESTS} requests answered, every check passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        import traceback

        traceback.print_exc()
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
