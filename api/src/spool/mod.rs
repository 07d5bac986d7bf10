//! The local durable spool: where a message goes when Redis cannot take it
//! within the acknowledgement budget, so WeChat still gets its answer in
//! time and the message is not lost.
//!
//! Each api process appends JSON lines ([`SpoolRecord`]) to files of its own,
//! `spool-<ulid>.jsonl` in `FERRY_SPOOL_DIR`, and fsyncs each line before the
//! push is acknowledged. The [`drainer`] replays the lines through the same
//! enqueue when Redis answers again (the idempotency key travels with each
//! line, so the replay is exactly-once) and deletes a file only once every
//! line in it is in Redis; new lines meanwhile go to a fresh file.
//!
//! A process holds an exclusive `flock` on each of its files for as long as
//! it lives. A file nobody holds was left by a process that stopped while
//! Redis was away: a live process adopts it and drains it, and never two at
//! once. The bytes one process holds are bounded (`FERRY_SPOOL_MAX_BYTES`);
//! past that a push is refused with 503 and WeChat retries it.

pub mod drainer;
pub mod record;

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::{FlockOperation, flock};
use tokio::sync::Notify;

pub use record::SpoolRecord;

const FILE_PREFIX: &str = "spool-";
const FILE_SUFFIX: &str = ".jsonl";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The process already holds `FERRY_SPOOL_MAX_BYTES` of spooled lines.
    #[error("the spool is full ({held} of {max} bytes)")]
    Full { held: u64, max: u64 },
    #[error("cannot write the spool: {0}")]
    Io(#[from] io::Error),
}

/// What the spool holds and has done, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Lines appended by this process.
    pub spooled: u64,
    /// Lines replayed into Redis by this process (its own and adopted ones).
    pub replayed: u64,
    /// Bytes in the files this process holds.
    pub held_bytes: u64,
    /// Files this process holds.
    pub files: usize,
}

/// A file of spooled lines; the open file carries our lock on it.
struct Segment {
    path: PathBuf,
    file: Arc<File>,
    bytes: u64,
    /// Lines at the start of the file already in Redis.
    replayed_lines: usize,
}

#[derive(Default)]
struct Held {
    /// The file lines are appended to.
    active: Option<Segment>,
    /// Files waiting for the drainer, oldest first.
    sealed: VecDeque<Segment>,
    bytes: u64,
}

/// Lines of a file not yet replayed, handed to the drainer.
pub struct Pending {
    pub path: PathBuf,
    pub lines: Vec<String>,
    /// Index of the first line not yet replayed.
    pub first: usize,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    held: Mutex<Held>,
    spooled: AtomicU64,
    replayed: AtomicU64,
    /// Set while lines wait for Redis: the outage is logged once.
    outage: AtomicBool,
    appended: Notify,
}

impl Spool {
    /// Creates `dir` if needed and checks now, not at the first outage, that
    /// a file can be written and synced there.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let probe = dir.join(format!(".probe-{}", ulid::Ulid::new()));
        File::create(&probe)?.sync_all()?;
        fs::remove_file(&probe)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            held: Mutex::default(),
            spooled: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            outage: AtomicBool::new(false),
            appended: Notify::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> SpoolStats {
        let held = self.lock();
        SpoolStats {
            spooled: self.spooled.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            held_bytes: held.bytes,
            files: held.sealed.len() + usize::from(held.active.is_some()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // A panic while holding the lock leaves consistent-enough counters.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `record` and syncs it to disk. Blocking (file I/O): call it
    /// from `spawn_blocking`. When it returns `Ok` the line survives a crash.
    pub fn append(&self, record: &SpoolRecord) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let len = line.len() as u64;
        let file = {
            let mut guard = self.lock();
            let held = &mut *guard;
            if held.bytes + len > self.max_bytes {
                return Err(SpoolError::Full {
                    held: held.bytes,
                    max: self.max_bytes,
                });
            }
            if held.active.is_none() {
                held.active = Some(self.create_segment()?);
            }
            let Some(segment) = held.active.as_mut() else {
                unreachable!("an active segment was just created");
            };
            if let Err(e) = (&*segment.file).write_all(&line) {
                // Part of the line may be on disk: later lines go to a fresh
                // file, and the drainer skips what it cannot read.
                if let Some(torn) = held.active.take() {
                    held.sealed.push_back(torn);
                }
                return Err(e.into());
            }
            segment.bytes += len;
            held.bytes += len;
            Arc::clone(&segment.file)
        };
        // Outside the lock: concurrent appends share the disk's flushes.
        file.sync_data()?;
        self.spooled.fetch_add(1, Ordering::Relaxed);
        self.appended.notify_one();
        Ok(())
    }

    /// Whether this append starts an outage (the first line since the spool
    /// was last empty): the caller logs it once.
    pub fn starts_outage(&self) -> bool {
        !self.outage.swap(true, Ordering::Relaxed)
    }

    fn create_segment(&self) -> io::Result<Segment> {
        // Another process may adopt a new file in the instant before we lock
        // it: then it is theirs, and we make another.
        for _ in 0..3 {
            let path = self
                .dir
                .join(format!("{FILE_PREFIX}{}{FILE_SUFFIX}", ulid::Ulid::new()));
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .open(&path)?;
            if try_lock(&file)? {
                sync_dir(&self.dir)?;
                return Ok(Segment {
                    path,
                    file: Arc::new(file),
                    bytes: 0,
                    replayed_lines: 0,
                });
            }
        }
        Err(io::Error::other("cannot lock a new spool file"))
    }

    /// The oldest file with lines to replay (adopting files left by stopped
    /// processes first), read from disk. Blocking.
    pub fn next_pending(&self) -> io::Result<Option<Pending>> {
        self.adopt_orphans()?;
        let (path, first) = {
            let mut held = self.lock();
            if held.sealed.is_empty()
                && let Some(active) = held.active.take_if(|a| a.bytes > 0)
            {
                held.sealed.push_back(active);
            }
            match held.sealed.front() {
                Some(segment) => (segment.path.clone(), segment.replayed_lines),
                None => return Ok(None),
            }
        };
        let bytes = fs::read(&path)?;
        let lines = bytes
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect();
        Ok(Some(Pending { path, lines, first }))
    }

    /// Notes that the first `upto` lines of `path` are in Redis, `newly` of
    /// them in this pass.
    pub fn mark_replayed(&self, path: &Path, upto: usize, newly: u64) {
        let mut held = self.lock();
        if let Some(segment) = held.sealed.iter_mut().find(|s| s.path == path) {
            segment.replayed_lines = upto;
        }
        self.replayed.fetch_add(newly, Ordering::Relaxed);
    }

    /// Deletes a file whose every line is in Redis, then releases it.
    /// Blocking. Returns whether the spool is now empty (the outage is over).
    pub fn finish(&self, path: &Path) -> io::Result<bool> {
        let mut held = self.lock();
        let Some(index) = held.sealed.iter().position(|s| s.path == path) else {
            return Ok(held.sealed.is_empty() && held.active.is_none());
        };
        // Unlink before the lock is released (when `segment` drops), so an
        // adopter that opened it meanwhile sees it is gone.
        fs::remove_file(path)?;
        sync_dir(&self.dir)?;
        if let Some(segment) = held.sealed.remove(index) {
            held.bytes = held.bytes.saturating_sub(segment.bytes);
        }
        let empty = held.sealed.is_empty() && held.active.is_none();
        if empty {
            self.outage.store(false, Ordering::Relaxed);
        }
        Ok(empty)
    }

    /// Resolves when a line is appended (or at once if one was since the
    /// last call).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// Takes over spool files no live process holds.
    fn adopt_orphans(&self) -> io::Result<()> {
        let ours: HashSet<PathBuf> = {
            let held = self.lock();
            held.active
                .iter()
                .chain(held.sealed.iter())
                .map(|s| s.path.clone())
                .collect()
        };
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let is_spool_file = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(FILE_PREFIX) && n.ends_with(FILE_SUFFIX));
            if !is_spool_file || ours.contains(&path) {
                continue;
            }
            let file = match OpenOptions::new().read(true).append(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !try_lock(&file)? {
                continue; // a live process holds it
            }
            // Its owner may have deleted it just before letting go of it.
            let (ours_now, on_disk) = (file.metadata()?, fs::metadata(&path));
            let same =
                on_disk.is_ok_and(|m| m.ino() == ours_now.ino() && m.dev() == ours_now.dev());
            if !same {
                continue;
            }
            let bytes = ours_now.len();
            tracing::warn!(
                file = %path.display(),
                bytes,
                "adopted a spool file left by a stopped api process: replaying it"
            );
            self.outage.store(true, Ordering::Relaxed);
            let mut held = self.lock();
            held.bytes += bytes;
            held.sealed.push_back(Segment {
                path,
                file: Arc::new(file),
                bytes,
                replayed_lines: 0,
            });
        }
        Ok(())
    }
}

/// An exclusive lock without waiting: `false` when another holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Makes a file's creation or removal itself durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forget(n: usize) -> SpoolRecord {
        SpoolRecord::forget(&format!("o_{n}"))
    }

    fn replay_all(spool: &Spool) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(p) = spool.next_pending().unwrap() {
            let n = p.lines.len();
            seen.extend(p.lines.into_iter().skip(p.first));
            spool.mark_replayed(&p.path, n, 0);
            spool.finish(&p.path).unwrap();
        }
        seen
    }

    fn files_in(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn appended_lines_are_handed_back_in_order_and_their_file_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for n in 0..5 {
            spool.append(&forget(n)).unwrap();
        }
        assert_eq!(files_in(dir.path()), 1);
        let lines = replay_all(&spool);
        assert_eq!(lines.len(), 5);
        assert!(lines[0].contains("o_0") && lines[4].contains("o_4"));
        assert_eq!(files_in(dir.path()), 0);
        let stats = spool.stats();
        assert_eq!((stats.spooled, stats.held_bytes, stats.files), (5, 0, 0));
    }

    #[test]
    fn a_partly_replayed_file_resumes_after_the_last_replayed_line() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for n in 0..3 {
            spool.append(&forget(n)).unwrap();
        }
        let p = spool.next_pending().unwrap().unwrap();
        spool.mark_replayed(&p.path, 2, 2);
        // Lines appended meanwhile go to a new file, replayed after this one.
        spool.append(&forget(3)).unwrap();
        let again = spool.next_pending().unwrap().unwrap();
        assert_eq!(again.path, p.path);
        assert_eq!(again.first, 2);
        assert_eq!(again.lines.len(), 3);
        assert_eq!(files_in(dir.path()), 2);
        spool.mark_replayed(&again.path, 3, 1);
        spool.finish(&again.path).unwrap();
        let rest = replay_all(&spool);
        assert_eq!(rest.len(), 1);
        assert!(rest[0].contains("o_3"));
    }

    #[test]
    fn a_full_spool_refuses_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let line = serde_json::to_vec(&forget(0)).unwrap().len() as u64 + 1;
        let spool = Spool::open(dir.path(), line * 2).unwrap();
        spool.append(&forget(0)).unwrap();
        spool.append(&forget(1)).unwrap();
        assert!(matches!(
            spool.append(&forget(2)),
            Err(SpoolError::Full { .. })
        ));
        replay_all(&spool);
        spool.append(&forget(3)).unwrap();
    }

    #[test]
    fn files_of_a_stopped_process_are_adopted_and_a_live_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let live = Spool::open(dir.path(), 1 << 20).unwrap();
        live.append(&forget(1)).unwrap();
        {
            let stopped = Spool::open(dir.path(), 1 << 20).unwrap();
            stopped.append(&forget(2)).unwrap();
            stopped.append(&forget(3)).unwrap();
        }
        let other = Spool::open(dir.path(), 1 << 20).unwrap();
        let adopted = replay_all(&other);
        assert_eq!(adopted.len(), 2, "{adopted:?}");
        assert!(adopted.iter().all(|l| !l.contains("o_1")));
        assert_eq!(replay_all(&live).len(), 1);
        assert_eq!(files_in(dir.path()), 0);
    }

    #[test]
    fn an_unwritable_directory_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "").unwrap();
        assert!(Spool::open(&file, 1024).is_err());
    }
}
