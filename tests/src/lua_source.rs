//! Reading Ferry's Lua libraries (`migrations/*.lua`) from tests: one
//! top-level function's lines, for `lua_copies.rs` (copies kept honest) and
//! `lua_time.rs` (a function run on its own).

/// The lines of `local function <name>(` ... `end`, with their 1-based
/// numbers.
pub fn lua_function<'a>(
    source: &'a str,
    file: &str,
    name: &str,
) -> Result<Vec<(usize, &'a str)>, String> {
    let header = format!("local function {name}(");
    let mut lines = source.lines().enumerate();
    let start = lines
        .by_ref()
        .find(|(_, l)| l.starts_with(&header))
        .ok_or_else(|| format!("{file}: no `{header}` at the start of a line"))?;
    let mut body = vec![(start.0 + 1, start.1)];
    for (i, l) in lines {
        body.push((i + 1, l));
        if l == "end" {
            return Ok(body);
        }
    }
    Err(format!(
        "{file}: `{name}` (line {}) has no closing `end` at column 0",
        start.0 + 1
    ))
}
