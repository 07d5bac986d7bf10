//! Files uploaded for OpenAI's Batch API, kept in Redis.
//!
//! **Why Redis**: every api process of a fleet serves every file with
//! nothing shared but Redis (no volume, no sticky routing), and a file
//! lives exactly as long as it is needed: its keys expire. A file is a hash
//! (owner, name, purpose, size, lines, times) and a list of its content in
//! chunks of [`CHUNK_BYTES`], both under the tag of its owner's partition
//! of the batch queue (the id names the partition: `file-<n>-<ULID>`), so
//! the id alone finds them. An upload writes its chunks as they arrive
//! (the body is never whole in memory) and writes the hash last: a file
//! is visible only once complete, and an upload cut short leaves chunks
//! that expire within [`UPLOAD_TTL`]. Each API key has an index of its
//! files under its own tag (capped at [`INDEX_KEPT`]; ids of expired files
//! are dropped as it is read), for `GET /files`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::Pipeline;

use super::openai::{FileRef, new_file_id, parse_file_id, ulid_of};
use crate::job::from_millis;
use crate::keys::QueueKeys;
use crate::queue::QueueError;
use crate::store::Store;

/// Bytes per Redis value of a file's content.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks that a file upload did not finish within this long expire.
pub const UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// The newest files (and OpenAI batches) an API key's index keeps.
pub const INDEX_KEPT: usize = 10_000;

/// An uploaded file, as `GET /files/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub id: String,
    /// The API key (principal name) that uploaded it.
    pub owner: String,
    pub filename: String,
    pub purpose: String,
    pub bytes: u64,
    /// Lines that are not blank.
    pub lines: u64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The uploaded files of one deployment.
#[derive(Clone)]
pub struct Files {
    store: Store,
    /// How long a file is kept unless its upload asks for less or more.
    retention: Duration,
}

impl Files {
    pub fn new(store: Store, retention: Duration) -> Self {
        Self { store, retention }
    }

    /// How long a file is kept by default.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    fn keys_of(&self, id: &str) -> Option<QueueKeys> {
        match parse_file_id(id)? {
            FileRef::Uploaded(partition) => Some(self.store.keys().partition(&partition)),
            _ => None,
        }
    }

    /// Starts an upload for `owner`, in its partition of the batch queue.
    pub fn begin(&self, owner: &str) -> Upload {
        let partition = self
            .store
            .keys()
            .partitions()
            .place(crate::queue::BATCH, owner);
        let id = new_file_id(&partition);
        let q = self.store.keys().partition(&partition);
        Upload {
            files: self.clone(),
            owner: owner.to_owned(),
            meta: q.file(&id),
            content: q.file_content(&id),
            id,
            pending: Vec::with_capacity(CHUNK_BYTES),
            chunks: 0,
            bytes: 0,
        }
    }

    /// An uploaded file, `None` when unknown, expired, or not an uploaded
    /// file's id.
    pub async fn get(&self, id: &str) -> Result<Option<FileInfo>, QueueError> {
        let Some(q) = self.keys_of(id) else {
            return Ok(None);
        };
        let mut conn = self.store.conn().await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(q.file(id))
            .query_async(&mut conn)
            .await?;
        Ok(parse_file(&fields))
    }

    /// Up to `count` chunks of a file's content from chunk `start`.
    pub async fn chunks(
        &self,
        id: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<Vec<u8>>, QueueError> {
        let Some(q) = self.keys_of(id) else {
            return Ok(Vec::new());
        };
        let mut conn = self.store.conn().await?;
        Ok(redis::cmd("LRANGE")
            .arg(q.file_content(id))
            .arg(start)
            .arg(start + count.max(1) - 1)
            .query_async(&mut conn)
            .await?)
    }

    /// Deletes `owner`'s file `id`; whether there was one.
    pub async fn delete(&self, id: &str, owner: &str) -> Result<bool, QueueError> {
        let Some(q) = self.keys_of(id) else {
            return Ok(false);
        };
        let mut conn = self.store.conn().await?;
        let (deleted,): (u64,) = redis::pipe()
            .cmd("DEL")
            .arg(q.file(id))
            .cmd("DEL")
            .arg(q.file_content(id))
            .ignore()
            .query_async(&mut conn)
            .await?;
        let index = Index::files(&self.store, owner);
        index.remove(&mut conn, &[id.to_owned()]).await?;
        Ok(deleted > 0)
    }

    /// `owner`'s files after `after` (an id; `None`: from the start),
    /// newest first or oldest first, at most `limit`; and whether more
    /// follow. `Err(None)` when `after` is no file id.
    pub async fn list(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
        newest_first: bool,
    ) -> Result<(Vec<FileInfo>, bool), ListError> {
        let index = Index::files(&self.store, owner);
        index
            .page(&self.store, after, limit, newest_first, |id| async move {
                self.get(&id).await
            })
            .await
    }
}

/// Why a list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("`after` is not an id of this list")]
    BadCursor,
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// One upload under way: chunks are written as they come, the file's hash
/// last ([`Upload::finish`]).
pub struct Upload {
    files: Files,
    owner: String,
    pub id: String,
    meta: String,
    content: String,
    pending: Vec<u8>,
    chunks: u64,
    bytes: u64,
}

impl Upload {
    /// Appends content, writing every full chunk.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), QueueError> {
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            let room = CHUNK_BYTES - self.pending.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.pending.extend_from_slice(now);
            data = later;
            if self.pending.len() == CHUNK_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    async fn flush(&mut self) -> Result<(), QueueError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pipe = Pipeline::new();
        pipe.cmd("RPUSH")
            .arg(&self.content)
            .arg(&self.pending)
            .ignore();
        if self.chunks == 0 {
            pipe.cmd("EXPIRE")
                .arg(&self.content)
                .arg(UPLOAD_TTL.as_secs())
                .ignore();
        }
        let mut conn = self.files.store.conn().await?;
        pipe.query_async::<()>(&mut conn).await?;
        self.chunks += 1;
        self.pending.clear();
        Ok(())
    }

    /// The whole file is in: writes its hash (it becomes visible), keeps
    /// it `ttl` (the deployment's retention when `None`), and lists it in
    /// the owner's index.
    pub async fn finish(
        mut self,
        filename: &str,
        purpose: &str,
        lines: u64,
        ttl: Option<Duration>,
    ) -> Result<FileInfo, QueueError> {
        self.flush().await?;
        let ttl = ttl.unwrap_or(self.files.retention).as_secs().max(1);
        let now = Utc::now();
        let created_ms = now.timestamp_millis();
        let mut pipe = Pipeline::new();
        pipe.atomic();
        pipe.cmd("HSET")
            .arg(&self.meta)
            .arg("id")
            .arg(&self.id)
            .arg("owner")
            .arg(&self.owner)
            .arg("filename")
            .arg(filename)
            .arg("purpose")
            .arg(purpose)
            .arg("bytes")
            .arg(self.bytes)
            .arg("lines")
            .arg(lines)
            .arg("created_ms")
            .arg(created_ms)
            .arg("expires_ms")
            .arg(created_ms + ttl as i64 * 1000)
            .ignore();
        pipe.cmd("EXPIRE").arg(&self.meta).arg(ttl).ignore();
        pipe.cmd("EXPIRE").arg(&self.content).arg(ttl).ignore();
        let mut conn = self.files.store.conn().await?;
        pipe.query_async::<()>(&mut conn).await?;
        Index::files(&self.files.store, &self.owner)
            .add(&mut conn, &self.id)
            .await?;
        Ok(FileInfo {
            id: self.id.clone(),
            owner: self.owner.clone(),
            filename: filename.to_owned(),
            purpose: purpose.to_owned(),
            bytes: self.bytes,
            lines,
            created_at: from_millis(created_ms),
            expires_at: from_millis(created_ms + ttl as i64 * 1000),
        })
    }

    /// Drops what was written (an upload refused or cut short). Best
    /// effort: the chunks expire anyway.
    pub async fn discard(self) {
        let Ok(mut conn) = self.files.store.conn().await else {
            return;
        };
        let _ = redis::cmd("DEL")
            .arg(&self.content)
            .arg(&self.meta)
            .query_async::<()>(&mut conn)
            .await;
    }
}

fn parse_file(f: &HashMap<String, String>) -> Option<FileInfo> {
    let num = |name: &str| f.get(name).and_then(|v| v.parse::<u64>().ok());
    let time = |name: &str| num(name).map(|ms| from_millis(ms as i64));
    Some(FileInfo {
        id: f.get("id")?.clone(),
        owner: f.get("owner").cloned().unwrap_or_default(),
        filename: f.get("filename").cloned().unwrap_or_default(),
        purpose: f.get("purpose").cloned().unwrap_or_default(),
        bytes: num("bytes").unwrap_or(0),
        lines: num("lines").unwrap_or(0),
        created_at: time("created_ms").unwrap_or_default(),
        expires_at: time("expires_ms").unwrap_or_default(),
    })
}

/// An API key's index of its files or OpenAI batches: a sorted set whose
/// members, all scored 0, are `<ULID> <id>`, so lexical order is creation
/// order across partitions.
pub(super) struct Index {
    key: String,
}

impl Index {
    pub(super) fn files(store: &Store, owner: &str) -> Self {
        Self {
            key: store.keys().api_key_files(owner),
        }
    }

    pub(super) fn batches(store: &Store, owner: &str) -> Self {
        Self {
            key: store.keys().api_key_batches(owner),
        }
    }

    fn member(id: &str) -> Option<String> {
        ulid_of(id).map(|ulid| format!("{ulid} {id}"))
    }

    /// Lists `id`, keeping the newest [`INDEX_KEPT`].
    pub(super) async fn add<C: redis::aio::ConnectionLike>(
        &self,
        conn: &mut C,
        id: &str,
    ) -> Result<(), QueueError> {
        let Some(member) = Self::member(id) else {
            return Ok(());
        };
        let mut pipe = Pipeline::new();
        pipe.cmd("ZADD").arg(&self.key).arg(0).arg(member).ignore();
        pipe.cmd("ZREMRANGEBYRANK")
            .arg(&self.key)
            .arg(0)
            .arg(-(INDEX_KEPT as i64) - 1)
            .ignore();
        pipe.query_async::<()>(conn).await?;
        Ok(())
    }

    pub(super) async fn remove<C: redis::aio::ConnectionLike>(
        &self,
        conn: &mut C,
        ids: &[String],
    ) -> Result<(), QueueError> {
        let members: Vec<String> = ids.iter().filter_map(|id| Self::member(id)).collect();
        if members.is_empty() {
            return Ok(());
        }
        redis::cmd("ZREM")
            .arg(&self.key)
            .arg(members)
            .query_async::<()>(conn)
            .await?;
        Ok(())
    }

    /// Up to `limit` items after `after`, resolved by `get` (items it does
    /// not find have expired: they are dropped from the index), and
    /// whether more follow.
    pub(super) async fn page<T, F, Fut>(
        &self,
        store: &Store,
        after: Option<&str>,
        limit: usize,
        newest_first: bool,
        get: F,
    ) -> Result<(Vec<T>, bool), ListError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, QueueError>>,
    {
        let limit = limit.max(1);
        let mut cursor = match after {
            None => None,
            Some(id) => Some(Self::member(id).ok_or(ListError::BadCursor)?),
        };
        let mut found = Vec::with_capacity(limit + 1);
        let mut conn = store.conn().await.map_err(QueueError::from)?;
        loop {
            let want = limit + 1 - found.len();
            let (cmd, open, end) = if newest_first {
                ("ZREVRANGEBYLEX", "+", "-")
            } else {
                ("ZRANGEBYLEX", "-", "+")
            };
            let from = cursor.as_ref().map_or(open.to_owned(), |m| format!("({m}"));
            let members: Vec<String> = redis::cmd(cmd)
                .arg(&self.key)
                .arg(&from)
                .arg(end)
                .arg("LIMIT")
                .arg(0)
                .arg(want)
                .query_async(&mut conn)
                .await
                .map_err(QueueError::from)?;
            let exhausted = members.len() < want;
            let mut gone = Vec::new();
            for member in &members {
                let id = member.split_once(' ').map_or(member.as_str(), |(_, id)| id);
                match get(id.to_owned()).await? {
                    Some(item) => found.push(item),
                    None => gone.push(id.to_owned()),
                }
            }
            self.remove(&mut conn, &gone).await?;
            cursor = members.last().cloned().or(cursor);
            if exhausted || found.len() > limit {
                break;
            }
        }
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }
}
