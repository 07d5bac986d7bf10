//! `ferry queues`: each queue at a glance.

use crate::app;

pub async fn run() -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    let queue = app::job_queue(&config, 2)?;
    let stats = queue.stats().await?;
    println!(
        "{:<10} {:>8} {:>8} {:>9} {:>8} {:>6} {:>12}",
        "queue", "depth", "pending", "in-flight", "delayed", "dead", "oldest"
    );
    for s in stats {
        let oldest = s
            .oldest_age_secs
            .map_or("-".to_string(), |a| format!("{a:.1}s"));
        println!(
            "{:<10} {:>8} {:>8} {:>9} {:>8} {:>6} {:>12}",
            s.queue, s.depth, s.pending, s.in_flight, s.delayed, s.dead, oldest
        );
    }
    Ok(())
}
