//! `ferry_queue.lua` writes the hot paths' times as text made without a
//! number conversion (`now_text`). This checks, on a real Redis, that the
//! text is exactly what `now_ms` computes, for the microsecond values where
//! padding matters: `TIME` is replaced by fixed answers, and both functions
//! run from the library's own source.

use ferry_tests::RedisServer;
use ferry_tests::lua_source::lua_function;

const QUEUE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../migrations/ferry_queue.lua"
));

/// The text of `local function <name>(` ... `end` in ferry_queue.lua.
fn function(name: &str) -> String {
    let lines = lua_function(QUEUE, "ferry_queue.lua", name).unwrap();
    lines.iter().map(|(_, l)| *l).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_time_written_as_text_is_the_time_in_milliseconds() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let fake_time = "local function fake_time() return {ARGV[1], ARGV[2]} end\n";
    let script = format!(
        "{fake_time}{}\n{}\nreturn {{now_text(), string.format('%d', now_ms())}}",
        function("now_ms"),
        function("now_text")
    )
    .replace("redis.call('TIME')", "fake_time()");
    for (secs, micros) in [
        ("1796400000", "0"),
        ("1796400000", "7"),
        ("1796400000", "999"),
        ("1796400000", "1000"),
        ("1796400000", "54321"),
        ("1796400000", "123456"),
        ("1796400000", "999999"),
    ] {
        let (text, ms): (String, String) = redis::cmd("EVAL")
            .arg(&script)
            .arg(0)
            .arg(secs)
            .arg(micros)
            .query(&mut conn)
            .unwrap();
        assert_eq!(text, ms, "TIME {secs} {micros}");
    }
}
