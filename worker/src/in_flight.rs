//! What this worker holds right now: the stream entries it started and has
//! not yet recorded an outcome for. The lease keeper renews exactly these,
//! the heartbeat reports their count, the fetcher uses the per-queue counts
//! to keep batch's share of capacity, and shutdown hands back what is left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_common::job::JobId;
use ferry_common::keys::Partition;

/// Entry id -> job id, per partition (entry ids are unique only within one stream).
type Held = HashMap<Partition, HashMap<String, JobId>>;

#[derive(Clone, Default)]
pub struct InFlight {
    held: Arc<Mutex<Held>>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding this lock cannot leave it inconsistent.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn add(&self, job: &JobId, entry_id: &str) {
        self.lock()
            .entry(job.partition())
            .or_default()
            .insert(entry_id.to_owned(), job.clone());
    }

    pub fn remove(&self, job: &JobId, entry_id: &str) {
        if let Some(entries) = self.lock().get_mut(&job.partition()) {
            entries.remove(entry_id);
        }
    }

    pub fn count(&self, queue: &str) -> usize {
        self.lock()
            .iter()
            .filter(|(p, _)| p.queue == queue)
            .map(|(_, entries)| entries.len())
            .sum()
    }

    /// Whether this worker holds the entry `entry_id` of `partition`.
    pub fn holds(&self, partition: &Partition, entry_id: &str) -> bool {
        self.lock()
            .get(partition)
            .is_some_and(|entries| entries.contains_key(entry_id))
    }

    /// How many entries of `partition` this worker holds.
    pub fn count_in(&self, partition: &Partition) -> usize {
        self.lock().get(partition).map_or(0, HashMap::len)
    }

    pub fn total(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// Entry ids per partition, for the lease keeper.
    pub fn entries(&self) -> Vec<(Partition, Vec<String>)> {
        self.lock()
            .iter()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(q, entries)| (q.clone(), entries.keys().cloned().collect()))
            .collect()
    }

    /// Every held (job, entry), for handing back at shutdown.
    pub fn jobs(&self) -> Vec<(JobId, String)> {
        self.lock()
            .values()
            .flat_map(|entries| {
                entries
                    .iter()
                    .map(|(entry, job)| (job.clone(), entry.clone()))
            })
            .collect()
    }
}
