//! `ferry dlq list|show|replay|purge`: the dead-letter streams.

use anyhow::bail;
use ferry_common::job::JobId;
use ferry_common::queue::{JobQueue, QUEUES, inspect::DeadLetter};

use crate::app;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// The oldest dead letters of a queue.
    List {
        #[arg(long, default_value = "wechat")]
        queue: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One job's full record.
    Show { job_id: String },
    /// Put dead jobs back on their queue with fresh attempts.
    Replay {
        #[arg(long, default_value = "wechat")]
        queue: String,
        /// Job ids to replay; --all for every dead letter of the queue.
        job_ids: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters and their records for good.
    Purge {
        #[arg(long, default_value = "wechat")]
        queue: String,
        job_ids: Vec<String>,
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    let queue = app::job_queue(&config, 2)?;
    match args.action {
        Action::List { queue: name, limit } => {
            check_queue(&name)?;
            let letters = queue.dead_letters(&name, limit).await?;
            if letters.is_empty() {
                println!("no dead letters in {name}");
            }
            for l in letters {
                println!("{}  {}  {}", l.dead_at.to_rfc3339(), l.job_id, l.reason);
            }
        }
        Action::Show { job_id } => {
            let id: JobId = job_id.parse()?;
            match queue.job(&id).await? {
                Some(record) => println!("{}", serde_json::to_string_pretty(&record)?),
                None => {
                    bail!("job {id} not found (finished jobs expire after FERRY_JOB_RETENTION)")
                }
            }
        }
        Action::Replay {
            queue: name,
            job_ids,
            all,
        } => {
            let letters = select(&queue, &name, &job_ids, all).await?;
            let n = queue.replay(&letters).await?;
            println!("replayed {n} job(s) on {name}");
        }
        Action::Purge {
            queue: name,
            job_ids,
            all,
        } => {
            let letters = select(&queue, &name, &job_ids, all).await?;
            let n = queue.purge(&letters).await?;
            println!("purged {n} dead letter(s) from {name}");
        }
    }
    Ok(())
}

fn check_queue(name: &str) -> anyhow::Result<()> {
    if !QUEUES.contains(&name) {
        bail!("unknown queue {name:?} (known: {})", QUEUES.join(", "));
    }
    Ok(())
}

async fn select(
    queue: &JobQueue,
    name: &str,
    job_ids: &[String],
    all: bool,
) -> anyhow::Result<Vec<DeadLetter>> {
    check_queue(name)?;
    if job_ids.is_empty() && !all {
        bail!("name job ids, or pass --all");
    }
    let letters = queue.dead_letters(name, usize::MAX >> 1).await?;
    if all {
        return Ok(letters);
    }
    let chosen: Vec<DeadLetter> = letters
        .into_iter()
        .filter(|l| job_ids.contains(&l.job_id))
        .collect();
    if chosen.len() < job_ids.len() {
        bail!(
            "{} of the named jobs are not in {name}'s dead-letter stream",
            job_ids.len() - chosen.len()
        );
    }
    Ok(chosen)
}
