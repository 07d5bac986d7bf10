//! `ferry queues`: each queue at a glance, its partitions summed (and one
//! by one with `--partitions`).

use ferry_common::queue::inspect::{QueueStats, sum_partitions};

use crate::app;

#[derive(clap::Args)]
pub struct Args {
    /// Also show every partition of every queue on a row of its own.
    #[arg(long)]
    partitions: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    let queue = app::job_queue(&config, 2)?;
    queue.refresh_partitions().await?;
    let rows = queue.partition_stats().await?;
    println!(
        "{:<12} {:>5} {:>8} {:>8} {:>9} {:>8} {:>6} {:>12}",
        "queue", "parts", "depth", "pending", "in-flight", "delayed", "dead", "oldest"
    );
    for sum in sum_partitions(&rows) {
        print_row(&sum);
        if args.partitions && sum.partitions > 1 {
            let prefix = format!("{}:", sum.queue);
            for row in rows
                .iter()
                .filter(|r| r.queue == sum.queue || r.queue.starts_with(&prefix))
            {
                print_row(&QueueStats {
                    queue: format!("  {}", row.queue),
                    ..row.clone()
                });
            }
        }
    }
    Ok(())
}

fn print_row(s: &QueueStats) {
    let oldest = s
        .oldest_age_secs
        .map_or("-".to_string(), |a| format!("{a:.1}s"));
    println!(
        "{:<12} {:>5} {:>8} {:>8} {:>9} {:>8} {:>6} {:>12}",
        s.queue, s.partitions, s.depth, s.pending, s.in_flight, s.delayed, s.dead, oldest
    );
}
