//! Runs `redis-benchmark` against the bench's own Redis and reads its rate,
//! so Ferry's numbers can be reported as a ratio to Redis's own speed
//! measured on the same machine in the same run.

use std::process::Command;

/// Requests per second `redis-benchmark` reached for `command`.
pub fn rate(
    port: u16,
    requests: u64,
    clients: u32,
    pipeline: u32,
    command: &[&str],
) -> anyhow::Result<f64> {
    let output = Command::new("redis-benchmark")
        .arg("-p")
        .arg(port.to_string())
        .arg("-n")
        .arg(requests.to_string())
        .arg("-c")
        .arg(clients.to_string())
        .arg("-P")
        .arg(pipeline.to_string())
        .arg("--csv")
        .args(command)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // CSV: "test","rps",... then one row per test.
    let text = String::from_utf8_lossy(&output.stdout);
    let row = text
        .lines()
        .last()
        .ok_or_else(|| anyhow::anyhow!("redis-benchmark printed nothing"))?;
    let rps = row
        .split(',')
        .nth(1)
        .map(|f| f.trim_matches('"'))
        .and_then(|f| f.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("unreadable redis-benchmark output: {row}"))?;
    Ok(rps)
}
