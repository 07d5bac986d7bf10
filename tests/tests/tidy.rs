//! House rules the compiler cannot check (ARCHITECTURE.md, "Invariants"):
//! every Redis key name is built in `common/src/keys.rs`, every metric name
//! is spelled in `common/src/metrics.rs`.
//!
//! What is scanned: every `.rs` file under `common/src`, `api/src`,
//! `worker/src` and `cli/src` (not `tests/`, not `bench/`). Comments are
//! skipped, and so is test code: a `#[cfg(test)] mod x { ... }` block, and
//! the file of a `#[cfg(test)] mod x;` (unit tests may spell out the names
//! they expect). What is looked at: string literals as written in the
//! source (escapes not processed), plain, raw and byte strings alike.
//!
//! A literal is a Redis key built outside `keys.rs` when:
//!
//! - **K1 `hash-tag format`**: it contains `{{` followed by `{`, a letter, a
//!   digit or `_`: a format string writing a hash tag, as in
//!   `format!("{{{}}}:{}", prefix, rest)` or `"{{ferry}}:x"`;
//! - **K2 `key segment`**: it has no whitespace, contains `:`, and one of its
//!   `:`-separated pieces is one of [`KEY_WORDS`] (the distinctive segments
//!   of the key names in `keys.rs`: `"{}:job:{}"`, `":job:"`, `"conv:"`,
//!   `"api_key:{}"`), or it contains one of [`KEY_PAIRS`];
//! - **K3 `hash-tag literal`**: it starts with a hash tag, `{` + name +
//!   optional `:` + name + `}`, followed by `:` and a letter (names: letters,
//!   digits, `_`, `-`), as in `"{ferry}:schema"`. A format string starting
//!   with a placeholder and a literal segment (`"{prefix}:schema"`) matches
//!   too, and is also building a key.
//!
//! Generic words (`user`, `token`, `lock`, `running`, `in_flight`, `wechat`,
//! ...) are left out of K2 on purpose: they name hash fields
//! (`in_flight:<queue>` in the worker registry) and job ids (`wechat:<ULID>`)
//! too; the keys that use them are caught by a neighbouring segment. A
//! literal that matches K2 but is not a key (a hash field spelled in its
//! one place) is listed, with its file and what it is, in [`NOT_KEYS`].
//!
//! A literal is a metric name spelled outside `metrics.rs` when:
//!
//! - **M1 `metric name`**: the whole literal is `ferry_` followed by letters,
//!   digits, `_`, `{` or `}` (a name, or a format string making one), and it
//!   is neither a Redis function registered in `migrations/*.lua`
//!   (`redis.register_function('ferry_...'`) nor in [`NOT_METRICS`];
//! - **M2 `metric macro`**: it is the first argument of `counter!`, `gauge!`,
//!   `histogram!` or their `describe_*!` forms (the name must be a constant
//!   of `metrics.rs`, whatever its spelling).
//!
//! A violation that cannot be fixed yet is listed in [`KNOWN`], with what
//! fixes it; an entry that no longer occurs fails the test, so the list only
//! shrinks.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

const ROOTS: &[&str] = &["common/src", "api/src", "worker/src", "cli/src"];
const KEYS_FILE: &str = "common/src/keys.rs";
const METRICS_FILE: &str = "common/src/metrics.rs";

/// K2: segments that name a Ferry key and little else.
const KEY_WORDS: &[&str] = &[
    // a queue's keys: {<prefix>:<queue>}:<word>...
    "stream",
    "job",
    "idem",
    "delayed",
    "dead",
    "batch",
    "batches",
    "owner",
    // fleet-wide keys: {<prefix>}:<word>...
    "schema",
    "workers",
    "worker",
    "conv",
    "limit",
    "limit_notice",
    "alerts",
    "admin_session",
    // a provider's keys: {<prefix>:provider:<name>}:<word>
    "provider",
    "leases",
    "breaker",
    // tags of their own: {<prefix>:<word>:<name>}:...
    "api_key",
    "partitions",
];

/// K2: two-segment names whose pieces alone are too generic.
const KEY_PAIRS: &[&str] = &["token:lock", "dev:outbox"];

/// M1: `ferry_` names that are not metrics, with what they are.
const NOT_METRICS: &[(&str, &str)] = &[
    (
        "ferry_admin",
        "the dashboard's session cookie (api/src/admin/session.rs)",
    ),
    (
        "ferry_span",
        "the tracing target of exported spans (common/src/telemetry/traces.rs)",
    ),
];

/// K2: literals in one file that look like key segments but are not keys,
/// with what they are: (file, literal as written, what it is).
const NOT_KEYS: &[(&str, &str, &str)] = &[
    (
        "common/src/history/minute.rs",
        "queue:{q}:dead",
        "a field of a history minute's hash, spelled in its one place",
    ),
    (
        "common/src/history/minute.rs",
        "provider:{p}:{outcome}",
        "a field of a history minute's hash, spelled in its one place",
    ),
    (
        "common/src/history/minute.rs",
        "provider:{p}:le:{}",
        "a field of a history minute's hash, spelled in its one place",
    ),
    (
        "common/src/history/minute.rs",
        "provider:",
        "the prefix of a history minute's provider fields, read back",
    ),
];

/// Violations known and not yet fixed: (file, literal as written, rule, fix).
const KNOWN: &[(&str, &str, Rule, &str)] = &[];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    HashTagFormat,
    KeySegment,
    HashTagLiteral,
    MetricName,
    MetricMacro,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::HashTagFormat => "K1 hash-tag format (Redis key outside common/src/keys.rs)",
            Rule::KeySegment => "K2 key segment (Redis key outside common/src/keys.rs)",
            Rule::HashTagLiteral => "K3 hash-tag literal (Redis key outside common/src/keys.rs)",
            Rule::MetricName => "M1 metric name (outside common/src/metrics.rs)",
            Rule::MetricMacro => "M2 metric macro with a literal name (use common/src/metrics.rs)",
        })
    }
}

/// A string literal: where it is, its text as written, whether it is test
/// code, and the code just before it (comments and literals blanked).
#[derive(Debug)]
struct Literal {
    line: usize,
    text: String,
    before: String,
    in_test: bool,
}

/// The string literals of a Rust source file, and the `#[cfg(test)] mod x;`
/// declarations it makes (their files are test code).
#[derive(Debug, Default)]
struct Scanned {
    literals: Vec<Literal>,
    test_modules: Vec<String>,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Lexes `src`: literals out, and `code`, the source with comments and
/// literal contents replaced by spaces (newlines kept), for what follows.
fn lex(src: &str) -> (Vec<(usize, usize, String)>, String) {
    let chars: Vec<char> = src.chars().collect();
    let n = chars.len();
    let mut code = String::with_capacity(src.len());
    let mut literals = Vec::new(); // (line, offset in `code`, text)
    let mut line = 1;
    let mut i = 0;
    let blank = |c: char, code: &mut String, line: &mut usize| {
        if c == '\n' {
            *line += 1;
            code.push('\n');
        } else {
            code.push(' ');
        }
    };
    while i < n {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && is_ident(chars[i - 1]);
        if c == '/' && next == Some('/') {
            while i < n && chars[i] != '\n' {
                code.push(' ');
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < n {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    code.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    code.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(chars[i], &mut code, &mut line);
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"..", r#".."#, br"..", cr"..".
        if !prev_ident && (c == 'r' || ((c == 'b' || c == 'c') && next == Some('r'))) {
            let mut j = if c == 'r' { i + 1 } else { i + 2 };
            let mut hashes = 0;
            while j < n && chars[j] == '#' {
                hashes += 1;
                j += 1;
            }
            if j < n && chars[j] == '"' {
                let start_line = line;
                for &ch in &chars[i..=j] {
                    code.push(ch);
                }
                let offset = code.len();
                let mut k = j + 1;
                let mut text = String::new();
                loop {
                    assert!(k < n, "unterminated raw string at line {start_line}");
                    if chars[k] == '"'
                        && chars[k + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|&&h| h == '#')
                            .count()
                            == hashes
                    {
                        break;
                    }
                    text.push(chars[k]);
                    blank(chars[k], &mut code, &mut line);
                    k += 1;
                }
                literals.push((start_line, offset, text));
                for _ in 0..=hashes {
                    code.push('"');
                }
                i = k + 1 + hashes;
                continue;
            }
        }
        if c == '"' {
            let start_line = line;
            code.push('"');
            let offset = code.len();
            let mut text = String::new();
            let mut k = i + 1;
            while chars[k] != '"' {
                if chars[k] == '\\' {
                    text.push('\\');
                    code.push(' ');
                    k += 1;
                }
                text.push(chars[k]);
                blank(chars[k], &mut code, &mut line);
                k += 1;
            }
            literals.push((start_line, offset, text));
            code.push('"');
            i = k + 1;
            continue;
        }
        if c == '\'' {
            // A char literal ('x', '\n', '\u{..}', '"') or a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 3..n).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                for _ in i..=end {
                    code.push(' ');
                }
                i = end + 1;
                continue;
            }
        }
        code.push(c);
        if c == '\n' {
            line += 1;
        }
        i += 1;
    }
    (literals, code)
}

/// Byte ranges of `code` inside `#[cfg(test)] mod x { ... }` blocks, and the
/// names of `#[cfg(test)] mod x;` declarations.
fn test_code(code: &str) -> (Vec<(usize, usize)>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut files = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]") {
        let attr_end = from + at + "#[cfg(test)]".len();
        from = attr_end;
        let mut rest = code[attr_end..].trim_start();
        // Further attributes between `#[cfg(test)]` and the item.
        while rest.starts_with("#[") {
            match rest.find(']') {
                Some(close) => rest = rest[close + 1..].trim_start(),
                None => break,
            }
        }
        for vis in ["pub(crate) ", "pub(super) ", "pub "] {
            if let Some(r) = rest.strip_prefix(vis) {
                rest = r.trim_start();
            }
        }
        let Some(r) = rest.strip_prefix("mod ") else {
            continue;
        };
        let r = r.trim_start();
        let name: String = r.chars().take_while(|&c| is_ident(c)).collect();
        let after = r[name.len()..].trim_start();
        if after.starts_with(';') {
            files.push(name);
        } else if after.starts_with('{') {
            let open = code.len() - after.len();
            let mut depth = 0usize;
            let mut close = code.len();
            for (k, ch) in code[open..].char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = open + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            blocks.push((open, close));
            from = close;
        }
    }
    (blocks, files)
}

fn scan(src: &str) -> Scanned {
    let (literals, code) = lex(src);
    let (blocks, test_modules) = test_code(&code);
    let literals = literals
        .into_iter()
        .map(|(line, offset, text)| {
            let start = offset.saturating_sub(60);
            let start = (start..offset)
                .find(|&k| code.is_char_boundary(k))
                .unwrap_or(offset);
            Literal {
                line,
                text,
                before: code[start..offset - 1].to_owned(),
                in_test: blocks.iter().any(|&(a, b)| a <= offset && offset <= b),
            }
        })
        .collect();
    Scanned {
        literals,
        test_modules,
    }
}

/// K1-K3.
fn key_rule(text: &str) -> Option<Rule> {
    let chars: Vec<char> = text.chars().collect();
    let k1 = chars
        .windows(3)
        .any(|w| w[0] == '{' && w[1] == '{' && (w[2] == '{' || is_ident(w[2])));
    if k1 {
        return Some(Rule::HashTagFormat);
    }
    if !text.chars().any(char::is_whitespace) && text.contains(':') {
        let piece = text.split(':').any(|p| KEY_WORDS.contains(&p));
        if piece || KEY_PAIRS.iter().any(|pair| text.contains(pair)) {
            return Some(Rule::KeySegment);
        }
    }
    if hash_tag_literal(text) {
        return Some(Rule::HashTagLiteral);
    }
    None
}

/// K3: `{name}:` or `{name:name}:`, then a letter.
fn hash_tag_literal(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('{') else {
        return false;
    };
    let Some(close) = rest.find('}') else {
        return false;
    };
    let tag = &rest[..close];
    let name = |s: &str| !s.is_empty() && s.chars().all(|c| is_ident(c) || c == '-');
    let tag_ok = match tag.split_once(':') {
        Some((a, b)) => name(a) && name(b),
        None => name(tag),
    };
    let after = &rest[close + 1..];
    tag_ok
        && after
            .strip_prefix(':')
            .and_then(|a| a.chars().next())
            .is_some_and(|c| c.is_ascii_alphabetic())
}

/// M1, M2.
fn metric_rule(lit: &Literal, functions: &[String]) -> Option<Rule> {
    let before = lit.before.trim_end();
    let macros = [
        "counter!(",
        "gauge!(",
        "histogram!(",
        "describe_counter!(",
        "describe_gauge!(",
        "describe_histogram!(",
    ];
    if macros.iter().any(|m| before.ends_with(m)) {
        return Some(Rule::MetricMacro);
    }
    let text = lit.text.as_str();
    let name_like = text.strip_prefix("ferry_").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| is_ident(c) || c == '{' || c == '}')
    });
    let known = functions.iter().any(|f| f == text) || NOT_METRICS.iter().any(|(n, _)| *n == text);
    (name_like && !known).then_some(Rule::MetricName)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every Redis function `migrations/*.lua` registers.
fn registered_functions() -> Vec<String> {
    let mut out = Vec::new();
    let dir = workspace().join("migrations");
    for entry in fs::read_dir(&dir).expect("migrations/") {
        let path = entry.expect("migrations/ entry").path();
        if path.extension().is_some_and(|e| e == "lua") {
            let src = fs::read_to_string(&path).expect("a migration");
            for piece in src.split("redis.register_function('").skip(1) {
                out.push(piece.split('\'').next().unwrap_or_default().to_owned());
            }
        }
    }
    assert!(
        !out.is_empty(),
        "no function registered in migrations/*.lua"
    );
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file of `mod name;` declared in `file`.
fn module_files(file: &Path, name: &str) -> [PathBuf; 2] {
    let dir = file.parent().expect("a file has a directory");
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let base = if matches!(stem, "mod" | "lib" | "main") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        base.join(format!("{name}.rs")),
        base.join(name).join("mod.rs"),
    ]
}

#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    text: String,
    rule: Rule,
}

fn violations() -> Vec<Violation> {
    let root = workspace();
    let functions = registered_functions();
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_files(&root.join(dir), &mut files);
    }
    let mut scanned = Vec::new();
    let mut test_files = Vec::new();
    for path in &files {
        let src = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let s = scan(&src);
        for name in &s.test_modules {
            test_files.extend(module_files(path, name));
        }
        scanned.push((path, s));
    }
    let mut out = Vec::new();
    for (path, s) in scanned {
        if test_files.contains(path) {
            continue;
        }
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        for lit in s.literals.iter().filter(|l| !l.in_test) {
            let not_key = NOT_KEYS.iter().any(|(f, t, _)| *f == rel && *t == lit.text);
            let key = (rel != KEYS_FILE && !not_key)
                .then(|| key_rule(&lit.text))
                .flatten();
            let metric = (rel != METRICS_FILE)
                .then(|| metric_rule(lit, &functions))
                .flatten();
            for rule in key.into_iter().chain(metric) {
                out.push(Violation {
                    file: rel.clone(),
                    line: lit.line,
                    text: lit.text.clone(),
                    rule,
                });
            }
        }
    }
    out
}

#[test]
fn redis_keys_and_metric_names_are_spelled_in_their_one_place() {
    let found = violations();
    let new: Vec<&Violation> = found
        .iter()
        .filter(|v| {
            !KNOWN
                .iter()
                .any(|(f, t, r, _)| *f == v.file && *t == v.text && *r == v.rule)
        })
        .collect();
    let fixed: Vec<String> = KNOWN
        .iter()
        .filter(|(f, t, r, _)| {
            !found
                .iter()
                .any(|v| *f == v.file && *t == v.text && *r == v.rule)
        })
        .map(|(f, t, _, _)| format!("{f}: \"{t}\""))
        .collect();
    let report: Vec<String> = new
        .iter()
        .map(|v| format!("  {}:{}: \"{}\"\n      {}", v.file, v.line, v.text, v.rule))
        .collect();
    assert!(
        new.is_empty(),
        "string literals that build Redis keys or spell metric names outside \
         their one place (rules at the top of tests/tests/tidy.rs):\n{}\n\
         Build the key in common/src/keys.rs, or name the metric in \
         common/src/metrics.rs and use the constant.",
        report.join("\n")
    );
    assert!(
        fixed.is_empty(),
        "fixed, remove from KNOWN in tests/tests/tidy.rs: {fixed:?}"
    );
}

#[test]
fn the_places_themselves_exist_and_the_key_words_are_theirs() {
    let root = workspace();
    let keys = fs::read_to_string(root.join(KEYS_FILE)).expect("keys.rs");
    assert!(fs::metadata(root.join(METRICS_FILE)).is_ok(), "metrics.rs");
    for word in KEY_WORDS.iter().chain(KEY_PAIRS) {
        assert!(
            keys.contains(&format!("\"{word}"))
                || keys.contains(&format!("{word}:"))
                || keys.contains(&format!(":{word}")),
            "`{word}` is not a key segment of keys.rs any more: update KEY_WORDS"
        );
    }
    // keys.rs and metrics.rs are caught by the rules they are exempt from,
    // so the rules see what they are meant to.
    let functions = registered_functions();
    let in_keys = scan(&keys)
        .literals
        .iter()
        .filter(|l| !l.in_test && key_rule(&l.text).is_some())
        .count();
    assert!(
        in_keys >= 5,
        "the key rules see only {in_keys} literals of keys.rs"
    );
    let metrics = fs::read_to_string(root.join(METRICS_FILE)).expect("metrics.rs");
    let in_metrics = scan(&metrics)
        .literals
        .iter()
        .filter(|l| metric_rule(l, &functions) == Some(Rule::MetricName))
        .count();
    assert!(
        in_metrics >= 10,
        "the metric rule sees only {in_metrics} names of metrics.rs"
    );
}

#[test]
fn the_rules_flag_keys_and_metrics_and_leave_other_strings_alone() {
    let flagged = [
        ("{{{}}}:{}", Rule::HashTagFormat),
        ("{{{}:{}}}", Rule::HashTagFormat),
        ("{{ferry}}:schema", Rule::HashTagFormat),
        ("{}:job:{}", Rule::KeySegment),
        (":job:", Rule::KeySegment),
        ("conv:", Rule::KeySegment),
        ("api_key:{}", Rule::KeySegment),
        ("{ferry:batch}:batch:{id}", Rule::KeySegment),
        ("token:lock", Rule::KeySegment),
        ("{ferry}:x", Rule::HashTagLiteral),
        ("{ferry:wechat}:pending", Rule::HashTagLiteral),
    ];
    for (text, rule) in flagged {
        assert_eq!(key_rule(text), Some(rule), "{text}");
    }
    let left = [
        "{name}:{scopes}:{}",
        "{applied_by}:{}",
        "{provider}: open for {for_secs} s",
        "in_flight:{queue}",
        "wechat:01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "{\"job\": 1}",
        "{{\"a\":{}}}",
        "127.0.0.1:8000",
        "http://localhost:6379",
        "job",
        "the job: gone",
    ];
    for text in left {
        assert_eq!(key_rule(text), None, "{text}");
    }
    let functions = vec!["ferry_enqueue".to_owned()];
    let metric = |text: &str, before: &str| {
        metric_rule(
            &Literal {
                line: 1,
                text: text.to_owned(),
                before: before.to_owned(),
                in_test: false,
            },
            &functions,
        )
    };
    assert_eq!(metric("ferry_jobs_total", "= "), Some(Rule::MetricName));
    assert_eq!(
        metric("ferry_{kind}_total", "format!("),
        Some(Rule::MetricName)
    );
    assert_eq!(
        metric("jobs", "metrics::counter!(\n    "),
        Some(Rule::MetricMacro)
    );
    assert_eq!(metric("ferry_enqueue", "fcall(&mut pipe, "), None);
    assert_eq!(metric("ferry_admin", "= "), None);
    assert_eq!(metric("ferry_queue.lua", "file: "), None);
    assert_eq!(metric("ferry_*", ".arg("), None);
    assert_eq!(metric("ferry_prefix = \\\"x\\\"", "("), None);
}

#[test]
fn the_lexer_skips_comments_chars_and_test_modules() {
    let src = r####"
// "{ferry}:schema" in a comment
/* "conv:" /* nested */ still a comment */
/// "ferry_doc_total"
fn f<'a>(x: &'a str) -> char {
    let q = '"';
    let e = '\'';
    let s = "real \" one";
    let r = r#"raw "quoted" {ferry}:raw"#;
    let b = b"bytes";
    '"'
}
#[cfg(test)]
mod tests {
    fn g() { let k = "{ferry}:conv:o"; { "nested" }; }
}
fn after() { "after"; }
#[cfg(test)]
#[path = "x.rs"]
pub(crate) mod unit;
"####;
    let s = scan(src);
    let texts: Vec<(&str, bool)> = s
        .literals
        .iter()
        .map(|l| (l.text.as_str(), l.in_test))
        .collect();
    assert_eq!(
        texts,
        [
            ("real \\\" one", false),
            ("raw \"quoted\" {ferry}:raw", false),
            ("bytes", false),
            ("{ferry}:conv:o", true),
            ("nested", true),
            ("after", false),
            ("x.rs", false),
        ]
    );
    assert_eq!(s.literals[0].line, 8);
    assert_eq!(s.literals[5].line, 17);
    assert_eq!(s.test_modules, ["unit"]);
}
