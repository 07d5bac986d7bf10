#!/usr/bin/env python3
"""Instructions Redis executes per job in ferry_queue.lua's enqueue and
drain, counted by valgrind's callgrind: a figure that does not move with the
machine's load, unlike CPU seconds (on the shared 2-core machines those
varied by +-15% between runs of the same code, and the same code counts the
same within 0.2%).

    pip install redis   # the client; any 5.x
    python3 bench/lua_instructions.py migrations/ferry_queue.lua
    git show 561eeff:migrations/ferry_queue.lua > /tmp/before.lua
    python3 bench/lua_instructions.py /tmp/before.lua

It starts its own redis-server under callgrind on a free port (nothing is
shared with another Redis), loads the library, enqueues `--jobs` no-op jobs
with `ferry_enqueue` in pipelines of 500 (as `JobQueue::enqueue_many`
does), then drains them as one worker does: `ferry_fetch` of 512, then one
`ferry_complete` for the batch. Redis's instructions are counted for each
phase alone (`callgrind_control -z` / `-d` between phases) and divided by
the jobs. It checks that every job succeeded and the stream is empty. The fetch
is the one the current binary calls: `ferry_fetch_flat` (one flat list of
8 items per entry, schema 10) when the library has it, else `ferry_fetch`
(a list per entry, schema 9 and before).

The keys are the ones Ferry's code builds for the `wechat` queue with
FERRY_PREFIX=bench; the payload is the no-op job's (`null`).
"""

import argparse
import glob
import os
import socket
import subprocess
import tempfile
import time
import uuid

import redis

TAG = "{bench:wechat}"
STREAM = TAG + ":stream"
GROUP = "workers"
FLAT_STRIDE = 8


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def instructions(pid, out_dir):
    """Dumps callgrind's counts since the last zeroing; returns the total."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    newest = max(glob.glob(os.path.join(out_dir, "cg.*")), key=os.path.getmtime)
    with open(newest) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {newest}")


def rows_of(reply):
    """ferry_fetch's answer as one list per entry, whichever shape it has."""
    if reply and not isinstance(reply[0], list):
        return [reply[i:i + FLAT_STRIDE] for i in range(0, len(reply), FLAT_STRIDE)]
    return reply


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("library", help="a ferry_queue.lua to measure")
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--stream-node-max-entries", type=int, default=16)
    args = ap.parse_args()

    out_dir = tempfile.mkdtemp(prefix="ferry-lua-cost-")
    port = free_port()
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--dump-instr=no",
         f"--callgrind-out-file={out_dir}/cg.%p",
         "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", out_dir,
         "--stream-node-max-entries", str(args.stream_node_max_entries)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        for _ in range(300):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        with open(args.library) as f:
            source = f.read()
        r.function_load(source, replace=True)
        fetch = "ferry_fetch_flat" if "'ferry_fetch_flat'" in source else "ferry_fetch"
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        n = args.jobs
        ids = [uuid.uuid4().hex for _ in range(n)]

        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True)
        for b in range(0, n, 500):
            pipe = r.pipeline(transaction=False)
            for job in ids[b:b + 500]:
                pipe.fcall("ferry_enqueue", 2, STREAM, f"{TAG}:job:{job}", job, "noop", "wechat", "null", 3, 0)
            pipe.execute()
        enqueue = instructions(server.pid, out_dir)

        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True)
        succeeded = 0
        while True:
            rows = rows_of(r.fcall(fetch, 1, STREAM, GROUP, "w1", 512, f"{TAG}:job:"))
            if not rows:
                break
            keys, argv = [STREAM], [GROUP, 86400]
            for row in rows:
                if row[2] == b"run":
                    keys.append(f"{TAG}:job:{row[1].decode()}")
                    argv += [row[0], "null"]
            succeeded += sum(r.fcall("ferry_complete", len(keys), *keys, *argv))
        drain = instructions(server.pid, out_dir)

        assert succeeded == n, f"{succeeded} of {n} jobs succeeded"
        assert r.xlen(STREAM) == 0, "entries left on the stream"
        print(f"{args.library}: {n} jobs")
        print(f"  enqueue: {enqueue / n:10.0f} Redis instructions per job")
        print(f"  drain:   {drain / n:10.0f} Redis instructions per job (fetch + complete)")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
