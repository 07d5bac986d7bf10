//! Every Redis key name Ferry uses, built here and nowhere else.
//!
//! All keys of one partition of a queue share one hash tag (`{<prefix>:<queue>}`
//! for partition 0, `{<prefix>:<queue>:<n>}` for the others), so every
//! function call touches one slot and runs unchanged on Redis Cluster.
//! Fleet-wide keys spread over tags of their own: one per provider, per
//! WeChat user, per API key, per dashboard session, the WeChat token, the
//! alert history; `{<prefix>}` keeps the schema and the worker registry.

/// The consumer group every worker of a queue reads through.
pub const CONSUMER_GROUP: &str = "workers";

/// The kinds of key Ferry keeps per WeChat user. A feature that starts
/// keeping something about a user adds its kind here (and to [`Self::ALL`]):
/// unsubscribing deletes one key of every kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserKey {
    /// The user's recent conversation turns.
    Conversation,
    /// The user's message limit (GCRA state).
    Limit,
    /// Set while the user has had their one limit notice.
    LimitNotice,
    /// Replies recorded for `ferry simulate` (`ferry dev`).
    DevOutbox,
    /// What is left of WeChat's customer-service allowance for the user's
    /// last action (hash, `migrations/ferry_wechat.lua`).
    CsQuota,
    /// The customer-service messages taken, by time (sorted set).
    CsSends,
    /// The rest of an answer that did not fit, kept for 继续 (hash).
    Continuation,
}

impl UserKey {
    pub const ALL: [UserKey; 7] = [
        UserKey::Conversation,
        UserKey::Limit,
        UserKey::LimitNotice,
        UserKey::DevOutbox,
        UserKey::CsQuota,
        UserKey::CsSends,
        UserKey::Continuation,
    ];
}

/// Key builder for one deployment (one `FERRY_PREFIX`), with its queues'
/// partitions.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    partitions: Partitions,
}

impl Keys {
    /// Keys of a deployment whose queues have one partition each.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            partitions: Partitions::default(),
        }
    }

    /// The same keys with the queues split as `partitions` says.
    pub fn with_partitions(mut self, partitions: Partitions) -> Self {
        self.partitions = partitions;
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How the queues are split (what new jobs are spread over).
    pub fn partitions(&self) -> &Partitions {
        &self.partitions
    }

    /// The keys of a queue's partition 0 (a queue that is not split).
    pub fn queue(&self, queue: &str) -> QueueKeys {
        self.partition(&Partition::first(queue))
    }

    /// The keys of one partition of a queue.
    pub fn partition(&self, partition: &Partition) -> QueueKeys {
        let tag = match partition.index {
            0 => format!("{{{}:{}}}", self.prefix, partition.queue),
            n => format!("{{{}:{}:{n}}}", self.prefix, partition.queue),
        };
        QueueKeys { tag }
    }

    /// Sorted set of each queue's highest partition count ever configured
    /// (score), so workers keep draining partitions a smaller count no
    /// longer writes to.
    pub fn partitions_seen(&self) -> String {
        self.global("partitions")
    }

    fn global(&self, rest: &str) -> String {
        format!("{{{}}}:{}", self.prefix, rest)
    }

    /// A key under a tag of its own (`{<prefix>:<tag>}:<rest>`): fleet-wide
    /// state spread over the cluster instead of one hot slot.
    fn tagged(&self, tag: &str, rest: &str) -> String {
        format!("{{{}:{tag}}}:{rest}", self.prefix)
    }

    /// Hash recording the applied schema (version, checksum, when, by whom).
    pub fn schema(&self) -> String {
        self.global("schema")
    }

    /// Lock held by one `ferry migrate` at a time.
    pub fn migrate_lock(&self) -> String {
        self.global("schema:lock")
    }

    /// The fleet's one cached WeChat access token.
    pub fn wechat_token(&self) -> String {
        self.tagged("wechat", "token")
    }

    /// Lock held by the one process refreshing the WeChat token.
    pub fn wechat_token_lock(&self) -> String {
        self.tagged("wechat", "token:lock")
    }

    /// Sorted set of live workers, scored by their last heartbeat (ms).
    pub fn workers(&self) -> String {
        self.global("workers")
    }

    /// One worker's heartbeat record (expires when the worker stops beating).
    pub fn worker(&self, worker_id: &str) -> String {
        self.global(&format!("worker:{worker_id}"))
    }

    /// One of the keys Ferry keeps about the WeChat user `openid`. Every
    /// per-user key is built here, from [`UserKey`], so that
    /// [`Keys::user_keys`] (what unsubscribing deletes) names them all.
    pub fn user(&self, kind: UserKey, openid: &str) -> String {
        match kind {
            UserKey::Conversation => self.user_tagged(openid, "conv"),
            UserKey::Limit => self.user_tagged(openid, "limit"),
            UserKey::LimitNotice => self.user_tagged(openid, "limit_notice"),
            UserKey::DevOutbox => self.user_tagged(openid, "dev:outbox"),
            UserKey::CsQuota => self.user_tagged(openid, "cs_quota"),
            UserKey::CsSends => self.user_tagged(openid, "cs_sends"),
            UserKey::Continuation => self.user_tagged(openid, "continuation"),
        }
    }

    /// The passive reply to one push (`msg`: its MsgId), answered to each
    /// of WeChat's tries; expires within a minute. Under the user's tag, so
    /// it and the user's [`UserKey::Continuation`] change in one call.
    pub fn passive_reply(&self, openid: &str, msg: &str) -> String {
        self.user_tagged(openid, &format!("reply:{msg}"))
    }

    /// Counts WeChat's tries of one push in passive mode (the third is the
    /// last).
    pub fn passive_tries(&self, openid: &str, msg: &str) -> String {
        self.user_tagged(openid, &format!("tries:{msg}"))
    }

    /// Pub/sub channel on which workers announce passive replies (the
    /// message is the reply's key) to the api processes holding the push.
    pub fn passive_channel(&self) -> String {
        self.tagged("wechat", "passive")
    }

    /// Set once WeChat refused the customer-service API (48001) with
    /// `WECHAT_REPLY_MODE=auto`: the fleet answers passively from then on.
    pub fn wechat_passive_mode(&self) -> String {
        self.tagged("wechat", "passive_mode")
    }

    /// One user's keys share the tag `{<prefix>:user:<openid>}`: one slot,
    /// so forgetting a user is one `DEL`.
    fn user_tagged(&self, openid: &str, rest: &str) -> String {
        self.tagged(&format!("user:{openid}"), rest)
    }

    /// Every key Ferry keeps about the WeChat user `openid`.
    pub fn user_keys(&self, openid: &str) -> Vec<String> {
        UserKey::ALL
            .iter()
            .map(|kind| self.user(*kind, openid))
            .collect()
    }

    /// List of one WeChat user's last conversation turns (JSON messages,
    /// oldest first), expiring when the user falls silent.
    pub fn conversation(&self, openid: &str) -> String {
        self.user(UserKey::Conversation, openid)
    }

    /// The fleet-wide limiter, leases and breaker of one AI provider, under
    /// the hash tag `{<prefix>:provider:<name>}`.
    pub fn provider(&self, name: &str) -> ProviderKeys {
        ProviderKeys {
            tag: format!("{{{}:provider:{}}}", self.prefix, name),
        }
    }

    /// The submissions-per-minute limit of one API key (the principal's
    /// name): a GCRA theoretical arrival time, like [`UserKey::Limit`].
    pub fn api_key_limit(&self, name: &str) -> String {
        self.tagged(&format!("api_key:{name}"), "limit")
    }

    /// Sorted set of one API key's uploaded files (OpenAI Batch API), all
    /// scored 0 with members `<ULID> <file id>`, so their order is the
    /// files' creation order; capped, and ids of expired files are dropped
    /// as it is read. Under the key's own tag: its files may live in
    /// several partitions.
    pub fn api_key_files(&self, name: &str) -> String {
        self.tagged(&format!("api_key:{name}"), "openai_files")
    }

    /// Sorted set of one API key's OpenAI Batch API batches, like
    /// [`Self::api_key_files`].
    pub fn api_key_batches(&self, name: &str) -> String {
        self.tagged(&format!("api_key:{name}"), "openai_batches")
    }

    /// Set (with expiry) while a WeChat user over the per-user limit has
    /// had their one notice, so further messages in the window get none.
    pub fn limit_notice(&self, openid: &str) -> String {
        self.user(UserKey::LimitNotice, openid)
    }

    /// Hash of one minute of the fleet's history (`minute`: minutes since
    /// the Unix epoch, UTC): counts every process adds to, expiring after a
    /// day (`common/src/history/`). All minutes share the `history` tag, so
    /// a window is read in one single-slot pipeline.
    pub fn history_minute(&self, minute: u64) -> String {
        self.tagged("history", &format!("m:{minute}"))
    }

    /// Stream of alert events (firing, resolved) from every api process,
    /// capped: the dashboard's and `ferry status`'s recent alerts.
    pub fn alerts(&self) -> String {
        self.tagged("alerts", "stream")
    }

    /// One signed-in dashboard session, named by the SHA-256 of its cookie
    /// (expiring), so a Redis dump holds no usable session id.
    pub fn admin_session(&self, id_hash: &str) -> String {
        self.tagged(&format!("admin_session:{id_hash}"), "session")
    }

    /// Replies the console sink recorded for one user, read by
    /// `ferry simulate` through the dev api (only used by `ferry dev`).
    pub fn dev_outbox(&self, openid: &str) -> String {
        self.user(UserKey::DevOutbox, openid)
    }
}

/// The coordination keys of one provider (see `migrations/ferry_fleet.lua`),
/// in the order its functions take them.
#[derive(Clone, Debug)]
pub struct ProviderKeys {
    tag: String,
}

impl ProviderKeys {
    /// rate, tokens, leases, breaker, window.
    pub fn all(&self) -> [String; 5] {
        ["rate", "tokens", "leases", "breaker", "window"].map(|k| format!("{}:{k}", self.tag))
    }

    pub fn breaker(&self) -> String {
        format!("{}:breaker", self.tag)
    }

    pub fn window(&self) -> String {
        format!("{}:window", self.tag)
    }

    /// Sorted set of the provider's concurrency leases (calls in flight).
    pub fn leases(&self) -> String {
        format!("{}:leases", self.tag)
    }
}

/// One partition of a queue. Partition 0 keeps the names a queue had
/// before it was split, so a deployment that starts partitioning keeps
/// draining its old queue as partition 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub queue: String,
    pub index: u16,
}

impl Partition {
    pub fn new(queue: &str, index: u16) -> Self {
        Self {
            queue: queue.to_owned(),
            index,
        }
    }

    /// A queue's partition 0.
    pub fn first(queue: &str) -> Self {
        Self::new(queue, 0)
    }

    /// `wechat` (partition 0) or `wechat:3`: as job ids and operators name it.
    pub fn name(&self) -> String {
        match self.index {
            0 => self.queue.clone(),
            n => format!("{}:{n}", self.queue),
        }
    }
}

/// How many partitions each queue has (`FERRY_QUEUE_PARTITIONS`; one by
/// default), and which one a new job goes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partitions {
    counts: Vec<(String, u16)>,
}

/// The most partitions a queue may have.
pub const MAX_PARTITIONS: u16 = 64;

impl Partitions {
    /// `wechat=6,batch=6`; a queue not named has one partition.
    pub fn parse(spec: &str, queues: &[&str]) -> Result<Self, String> {
        let mut counts = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (queue, n) = item
                .split_once('=')
                .ok_or_else(|| format!("expected queue=count, got {item:?}"))?;
            let queue = queue.trim();
            if !queues.contains(&queue) {
                return Err(format!(
                    "unknown queue {queue:?} (known: {})",
                    queues.join(", ")
                ));
            }
            let n: u16 = n
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=MAX_PARTITIONS).contains(n))
                .ok_or_else(|| format!("{queue}: expected 1..={MAX_PARTITIONS} partitions"))?;
            counts.push((queue.to_owned(), n));
        }
        Ok(Self { counts })
    }

    /// `queue`'s partition count.
    pub fn count(&self, queue: &str) -> u16 {
        self.counts
            .iter()
            .find(|(q, _)| q == queue)
            .map_or(1, |(_, n)| *n)
    }

    /// The partition of `queue` a job placed by `key` (a dedup key, an API
    /// key's name) goes to: the same key always lands in the same partition
    /// while the count stays, so its dedup key, record and entry are
    /// written in one call. A stable hash (FNV-1a), the same in every
    /// process and version.
    pub fn place(&self, queue: &str, key: &str) -> Partition {
        Partition::new(
            queue,
            (fnv1a(key.as_bytes()) % u64::from(self.count(queue))) as u16,
        )
    }

    /// Every partition of `queue` new jobs go to.
    pub fn of(&self, queue: &str) -> Vec<Partition> {
        (0..self.count(queue))
            .map(|i| Partition::new(queue, i))
            .collect()
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The keys of one partition of a queue, all under its hash tag.
#[derive(Clone, Debug)]
pub struct QueueKeys {
    tag: String,
}

impl QueueKeys {
    /// The stream of job ids waiting for, or held by, workers.
    pub fn stream(&self) -> String {
        format!("{}:stream", self.tag)
    }

    /// The hash holding one job's record.
    pub fn job(&self, job_id: &str) -> String {
        format!("{}:job:{}", self.tag, job_id)
    }

    /// Idempotency / dedup key: maps a caller's key to the job it created.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{}", self.tag, key)
    }

    /// Sorted set of jobs waiting for a retry, scored by due time (ms).
    pub fn delayed(&self) -> String {
        format!("{}:delayed", self.tag)
    }

    /// Stream of dead-lettered jobs with their reasons.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.tag)
    }

    /// Hash of one batch: status, counts, times, owner, webhook (see
    /// `migrations/ferry_batch.lua`). Under the queue's tag, so the function
    /// that records a job's outcome updates its batch in the same call.
    pub fn batch(&self, batch_id: &str) -> String {
        format!("{}:batch:{}", self.tag, batch_id)
    }

    /// Sorted set of recent batch ids by creation time (ms), for the
    /// dashboard's list; capped, and ids of expired batches are dropped as
    /// they are read.
    pub fn recent_batches(&self) -> String {
        format!("{}:batches", self.tag)
    }

    /// List of a batch's job ids, in line order (for its results).
    pub fn batch_jobs(&self, batch_id: &str) -> String {
        format!("{}:batch:{}:jobs", self.tag, batch_id)
    }

    /// Set of a batch's jobs a worker is running now.
    pub fn batch_running(&self, batch_id: &str) -> String {
        format!("{}:batch:{}:running", self.tag, batch_id)
    }

    /// Counter of one API key's jobs in flight (queued or running) on this
    /// queue, kept by the functions that enqueue and finish them.
    pub fn owner_in_flight(&self, owner: &str) -> String {
        format!("{}:owner:{}:in_flight", self.tag, owner)
    }

    /// Hash describing one uploaded file (OpenAI Batch API): owner, name,
    /// purpose, size, lines, times. Expires with the file.
    pub fn file(&self, file_id: &str) -> String {
        format!("{}:file:{}", self.tag, file_id)
    }

    /// List of one uploaded file's content, in chunks, in order.
    pub fn file_content(&self, file_id: &str) -> String {
        format!("{}:file:{}:content", self.tag, file_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_one_hash_tag() {
        let q = Keys::new("ferry").queue("wechat");
        for key in [
            q.stream(),
            q.job("wechat:1"),
            q.idempotency("m"),
            q.delayed(),
            q.dead(),
            q.batch("b"),
            q.batch_jobs("b"),
            q.batch_running("b"),
            q.recent_batches(),
            q.owner_in_flight("o"),
            q.file("file-1"),
            q.file_content("file-1"),
        ] {
            assert!(key.starts_with("{ferry:wechat}:"), "{key}");
        }
        let p3 = Keys::new("ferry").partition(&Partition::new("wechat", 3));
        assert!(p3.stream().starts_with("{ferry:wechat:3}:"));
    }

    #[test]
    fn a_users_keys_share_one_slot_and_differ_between_users() {
        let keys = Keys::new("ferry");
        let slot = |k: &str| redis::cluster_routing::Slot::for_key(k);
        let one = keys.user_keys("o1");
        assert!(one.iter().all(|k| slot(k) == slot(&one[0])), "{one:?}");
        assert!(one.iter().all(|k| k.starts_with("{ferry:user:o1}:")));
    }

    /// Keys that one command or one function call (or a `MULTI`) names
    /// together share a slot, as a Redis Cluster requires. (Every `FCALL`
    /// is also checked as it is built, in `functions::fcall`.)
    #[test]
    fn keys_used_together_share_one_slot() {
        let keys = Keys::new("ferry");
        let slot = |k: &String| redis::cluster_routing::Slot::for_key(k);
        let groups: Vec<Vec<String>> = vec![
            keys.user_keys("o1"),
            vec![keys.workers(), keys.worker("w1"), keys.worker("w2")],
            vec![keys.schema(), keys.migrate_lock(), keys.partitions_seen()],
            keys.provider("deepseek").all().to_vec(),
            vec![keys.wechat_token(), keys.wechat_token_lock()],
            (0..1440).map(|m| keys.history_minute(m)).collect(),
            vec![
                keys.api_key_limit("ci"),
                keys.api_key_files("ci"),
                keys.api_key_batches("ci"),
            ],
        ];
        for group in groups {
            assert!(
                group.iter().all(|k| slot(k) == slot(&group[0])),
                "{group:?}"
            );
        }
        // And fleet-wide state spreads: no two of these share a tag.
        let tags = [
            keys.user(UserKey::Conversation, "o1"),
            keys.user(UserKey::Conversation, "o2"),
            keys.api_key_limit("ci"),
            keys.api_key_files("other"),
            keys.admin_session("h"),
            keys.wechat_token(),
            keys.alerts(),
            keys.history_minute(1),
            keys.provider("deepseek").breaker(),
            keys.schema(),
        ]
        .map(|k| k[..k.find('}').unwrap() + 1].to_owned());
        let distinct: std::collections::HashSet<&String> = tags.iter().collect();
        assert_eq!(distinct.len(), tags.len(), "{tags:?}");
    }

    #[test]
    fn partitions_parse_and_place_stably() {
        let p = Partitions::parse("wechat=6, batch=2", &["wechat", "batch"]).unwrap();
        assert_eq!(
            (p.count("wechat"), p.count("batch"), p.count("x")),
            (6, 2, 1)
        );
        assert_eq!(p.place("wechat", "msg-1"), p.place("wechat", "msg-1"));
        let spread: std::collections::HashSet<u16> = (0..200)
            .map(|i| p.place("wechat", &format!("m{i}")).index)
            .collect();
        assert_eq!(spread.len(), 6, "every partition gets jobs");
        assert!(Partitions::parse("mail=2", &["wechat"]).is_err());
        assert!(Partitions::parse("wechat=0", &["wechat"]).is_err());
        assert!(Partitions::parse("wechat=65", &["wechat"]).is_err());
        assert!(Partitions::parse("wechat", &["wechat"]).is_err());
        assert_eq!(
            Partitions::parse("", &["wechat"]).unwrap(),
            Partitions::default()
        );
    }
}
