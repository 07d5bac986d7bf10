//! `ferry migrate [--status]`: apply (or show) the Redis schema.

use anyhow::Context;
use ferry_common::schema;
use ferry_common::schema::RECOMMENDED_STREAM_NODE_ENTRIES;
use ferry_common::store::Store;

use crate::app;

#[derive(clap::Args)]
pub struct Args {
    /// Show where Redis stands instead of migrating.
    #[arg(long)]
    status: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    app::check_redis_mode(&config).await?;
    let store = Store::new(&config.redis, 1, app::keys(&config))?;
    let mut conn = store
        .conn()
        .await
        .with_context(|| format!("Redis at {} is unreachable", config.redis_redacted()))?;
    let keys = store.keys();
    let status = if args.status {
        schema::status(&mut conn, keys).await?
    } else {
        let by = format!("ferry-migrate@{}", std::process::id());
        let status = schema::migrate(&mut conn, keys, &by).await?;
        println!(
            "migrated: schema version {} is applied",
            status.required_version
        );
        status
    };
    print_status(&status, &config.prefix);
    if config.redis.is_cluster() {
        // Libraries live on each primary: say where they are (a shard
        // added later gets them from its first "function not found").
        for (node, loaded) in schema::libraries_on_primaries(&config.redis).await? {
            println!(
                "primary {node}: libraries {}",
                if loaded { "loaded" } else { "MISSING" }
            );
        }
        // Where each partition lives: an uneven spread makes one shard the
        // bottleneck (move slots, or pick another count).
        let partitions: Vec<_> = ferry_common::queue::QUEUES
            .iter()
            .flat_map(|q| keys.partitions().of(q))
            .collect();
        let streams: Vec<String> = partitions
            .iter()
            .map(|p| keys.partition(p).stream())
            .collect();
        let owners = ferry_common::connection::owners(&config.redis, &streams).await?;
        for (partition, owner) in partitions.iter().zip(owners) {
            println!("partition {}: on {owner}", partition.name());
        }
    }
    Ok(())
}

fn print_status(s: &schema::SchemaStatus, prefix: &str) {
    let applied = s
        .applied_version
        .map_or("none".to_string(), |v| v.to_string());
    println!("prefix:            {prefix}");
    println!(
        "applied version:   {applied}{}",
        s.applied_at
            .as_deref()
            .map(|a| format!(" (at {a})"))
            .unwrap_or_default()
    );
    println!("required version:  {}", s.required_version);
    println!(
        "libraries loaded:  {}",
        if s.libraries_loaded { "yes" } else { "no" }
    );
    let checksum_ok = s.applied_checksum.as_deref() == Some(s.required_checksum.as_str());
    println!(
        "checksum:          {}",
        if checksum_ok {
            "matches this binary"
        } else {
            "differs from this binary"
        }
    );
    println!(
        "stream nodes:      {}",
        match s.stream_node_entries {
            Some(RECOMMENDED_STREAM_NODE_ENTRIES) => {
                format!("{RECOMMENDED_STREAM_NODE_ENTRIES} entries (as recommended)")
            }
            Some(n) => format!(
                "{n} entries; Ferry recommends {RECOMMENDED_STREAM_NODE_ENTRIES} \
                 (stream-node-max-entries: less Redis CPU per job, see ARCHITECTURE.md)"
            ),
            None => "unknown (CONFIG GET is not allowed)".to_string(),
        }
    );
    println!(
        "state:             {}",
        if s.is_current() {
            "current"
        } else {
            "outdated: run `ferry migrate`"
        }
    );
}
