//! `migrations/ferry_batch.lua` carries copies of `ferry_queue.lua`'s outcome
//! functions (Redis function libraries cannot call each other), plus the
//! batch accounting. This test keeps the copies honest: a fix made to one
//! library and not the other fails here, naming the function.
//!
//! The rule, applied to each function in [`COPIES`]:
//!
//! 1. A function is the text from its `local function <name>(` line (at the
//!    start of a line) to the first line that is exactly `end` (top-level
//!    functions close at column 0 in both files), both included.
//! 2. In the copy (`ferry_batch.lua`) only, a line whose trailing comment is
//!    exactly `-- batch accounting` exists only in the copy and is dropped,
//!    and a line whose trailing comment is `-- batch was: <line>` was changed
//!    in the copy on purpose and stands for `<line>` (ferry_queue's line).
//! 3. On both sides, blank lines and whole-line comments are dropped, a
//!    trailing `--` comment (outside a string) is removed, and runs of
//!    whitespace become one space (indentation is ignored).
//! 4. What remains must be equal, line for line. A `--[[` block comment
//!    inside a compared function is refused (rule 3 handles line comments
//!    only).
//!
//! Every function `ferry_batch.lua` shares a name with must be listed either
//! in [`COPIES`] or in [`NOT_COPIES`], so a new copy cannot go unchecked.

use ferry_tests::lua_source::lua_function;

const QUEUE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../migrations/ferry_queue.lua"
));
const BATCH: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../migrations/ferry_batch.lua"
));

/// Functions of `ferry_batch.lua` that are copies of `ferry_queue.lua`'s
/// namesakes.
const COPIES: &[&str] = &[
    "now_ms",
    "now_text",
    "finished",
    "release",
    "complete",
    "retry",
    "dead_letter",
    "hand_back",
];

/// Same name, different function: `ferry_batch.lua`'s `enqueue` writes a
/// chunk of a batch, not one job.
const NOT_COPIES: &[&str] = &["enqueue"];

const ADDED: &str = "-- batch accounting";
const CHANGED: &str = "-- batch was:";

/// One line kept for comparison: its 1-based number in its file and its
/// normalised text.
#[derive(Debug, Clone)]
struct Line {
    number: usize,
    text: String,
}

/// Names of the top-level `local function`s of a library.
fn function_names(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|l| l.strip_prefix("local function "))
        .filter_map(|rest| rest.split('(').next())
        .collect()
}

/// Where a `--` comment starts in `line`, outside single- or double-quoted
/// strings.
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                if b == b'\'' || b == b'"' {
                    quote = Some(b);
                } else if b == b'-' && bytes.get(i + 1) == Some(&b'-') {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// Rule 3: the code of a line, whitespace-normalised, or `None` for a blank
/// or comment-only line.
fn code(line: &str) -> Option<String> {
    let code = match comment_start(line) {
        Some(at) => &line[..at],
        None => line,
    };
    let normal = code.split_whitespace().collect::<Vec<_>>().join(" ");
    (!normal.is_empty()).then_some(normal)
}

/// Rules 2-4 for one side; `copy` applies the copy's markers.
fn comparable(
    lines: &[(usize, &str)],
    file: &str,
    name: &str,
    copy: bool,
) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    for &(number, raw) in lines {
        if raw.contains("--[[") {
            return Err(format!(
                "{file}:{number}: block comment inside `{name}`; use line comments"
            ));
        }
        let mut text = raw;
        if copy && let Some(at) = comment_start(raw) {
            let comment = raw[at..].trim_end();
            if comment == ADDED {
                continue;
            }
            if let Some(original) = comment.strip_prefix(CHANGED) {
                text = original.trim();
                if text.is_empty() {
                    return Err(format!(
                        "{file}:{number}: `{CHANGED}` names no original line"
                    ));
                }
            }
        }
        if let Some(text) = code(text) {
            out.push(Line { number, text });
        }
    }
    Ok(out)
}

/// A line diff (longest common subsequence; functions are short): `-` lines
/// of the original missing from the copy, `+` lines of the copy not in the
/// original.
fn diff(original: &[Line], copy: &[Line]) -> String {
    let (n, m) = (original.len(), copy.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if original[i].text == copy[j].text {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && original[i].text == copy[j].text {
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!(
                "  - ferry_queue.lua:{:<4} {}\n",
                original[i].number, original[i].text
            ));
            i += 1;
        } else {
            out.push_str(&format!(
                "  + ferry_batch.lua:{:<4} {}\n",
                copy[j].number, copy[j].text
            ));
            j += 1;
        }
    }
    out
}

/// Compares one copied function; `Err` carries the report.
fn compare(queue: &str, batch: &str, name: &str) -> Result<(), String> {
    let original = comparable(
        &lua_function(queue, "ferry_queue.lua", name)?,
        "ferry_queue.lua",
        name,
        false,
    )?;
    let copy = comparable(
        &lua_function(batch, "ferry_batch.lua", name)?,
        "ferry_batch.lua",
        name,
        true,
    )?;
    let same =
        original.len() == copy.len() && original.iter().zip(&copy).all(|(a, b)| a.text == b.text);
    if same {
        return Ok(());
    }
    Err(format!(
        "`{name}` in ferry_batch.lua is no longer a copy of ferry_queue.lua's \
         (lines ending `{ADDED}` or `{CHANGED} <line>` excepted):\n{}",
        diff(&original, &copy)
    ))
}

#[test]
fn the_batch_librarys_outcome_functions_are_copies_of_the_queues() {
    let failures: Vec<String> = COPIES
        .iter()
        .filter_map(|name| compare(QUEUE, BATCH, name).err())
        .collect();
    assert!(
        failures.is_empty(),
        "fix the copy, or mark an intended difference in ferry_batch.lua \
         (see tests/tests/lua_copies.rs):\n\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_function_sharing_a_name_is_checked_or_known_different() {
    let queue = function_names(QUEUE);
    let unlisted: Vec<&str> = function_names(BATCH)
        .into_iter()
        .filter(|name| queue.contains(name))
        .filter(|name| !COPIES.contains(name) && !NOT_COPIES.contains(name))
        .collect();
    assert!(
        unlisted.is_empty(),
        "ferry_batch.lua has functions named like ferry_queue.lua's that \
         tests/tests/lua_copies.rs does not know: {unlisted:?}; add each to \
         COPIES (a copy) or NOT_COPIES"
    );
    for name in COPIES.iter().chain(NOT_COPIES) {
        assert!(queue.contains(name), "ferry_queue.lua has no `{name}`");
    }
}

#[test]
fn a_changed_line_in_a_copy_is_reported_with_the_function_name() {
    let original = "  redis.call('ZADD', keys[3], due, id)\n";
    assert!(
        BATCH.contains(original),
        "the retry copy changed; update this test"
    );
    let broken = BATCH.replacen(original, "  redis.call('ZADD', keys[3], id, due)\n", 1);
    let report = compare(QUEUE, &broken, "retry").unwrap_err();
    assert!(report.contains("`retry`"), "{report}");
    assert!(
        report.contains("- ferry_queue.lua:") && report.contains("ZADD', keys[3], due, id)"),
        "{report}"
    );
    assert!(
        report.contains("+ ferry_batch.lua:") && report.contains("ZADD', keys[3], id, due)"),
        "{report}"
    );
    // An unmarked extra line is a difference too.
    let extra = BATCH.replacen(
        "  account(keys[1], keys[2], nil, now) -- batch accounting\n  return 1\nend\n\n-- ferry_dead_letter",
        "  account(keys[1], keys[2], nil, now)\n  return 1\nend\n\n-- ferry_dead_letter",
        1,
    );
    assert_ne!(extra, BATCH, "the retry copy changed; update this test");
    let report = compare(QUEUE, &extra, "retry").unwrap_err();
    assert!(
        report.contains("+ ferry_batch.lua:") && report.contains("account("),
        "{report}"
    );
}

#[test]
fn comments_are_found_outside_strings_only() {
    assert_eq!(code("  x = '--' -- note").as_deref(), Some("x = '--'"));
    assert_eq!(code("  -- only a comment"), None);
    assert_eq!(
        code(r#"  y = "a\"--b""#).as_deref(),
        Some(r#"y = "a\"--b""#)
    );
    assert_eq!(code("   \t  "), None);
}
