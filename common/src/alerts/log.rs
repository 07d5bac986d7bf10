//! The fleet's recent alert events in Redis: each api process appends what
//! its evaluator fires and resolves to one capped stream, so the dashboard
//! of any api process and `ferry status` show every process's alerts.
//!
//! Capping this stream (`MAXLEN ~`) is fine: it is a history for people, not
//! work (the no-`MAXLEN` rule is about job streams).

use serde::Serialize;

use super::{AlertEvent, AlertState};
use crate::store::{RedisError, Store};

/// Events kept in Redis.
const KEEP: usize = 200;

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedAlert {
    pub alert: String,
    pub state: String,
    pub value: f64,
    pub threshold: f64,
    /// RFC 3339.
    pub at: String,
    /// `host:pid` of the api process that evaluated it.
    pub process: String,
}

impl LoggedAlert {
    pub fn firing(&self) -> bool {
        self.state == "firing"
    }
}

#[derive(Clone)]
pub struct AlertLog {
    store: Store,
}

impl AlertLog {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Appends `event` as seen by `process`.
    pub async fn append(&self, event: &AlertEvent, process: &str) -> Result<(), RedisError> {
        let mut conn = self.store.conn().await?;
        let state = match event.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        };
        redis::cmd("XADD")
            .arg(self.store.keys().alerts())
            .arg("MAXLEN")
            .arg("~")
            .arg(KEEP)
            .arg("*")
            .arg("alert")
            .arg(event.alert.name())
            .arg("state")
            .arg(state)
            .arg("value")
            .arg(event.value)
            .arg("threshold")
            .arg(event.threshold)
            .arg("at")
            .arg(event.at.to_rfc3339())
            .arg("process")
            .arg(process)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The last `count` events, newest first.
    pub async fn recent(&self, count: usize) -> Result<Vec<LoggedAlert>, RedisError> {
        let mut conn = self.store.conn().await?;
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.store.keys().alerts())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| LoggedAlert {
                alert: e.get("alert").unwrap_or_default(),
                state: e.get("state").unwrap_or_default(),
                value: e.get("value").unwrap_or_default(),
                threshold: e.get("threshold").unwrap_or_default(),
                at: e.get("at").unwrap_or_default(),
                process: e.get("process").unwrap_or_default(),
            })
            .collect())
    }

    /// Alerts whose latest event, per process, is `firing` (from the last
    /// 200 events). A process that died while an alert fired keeps
    /// showing it until the log moves on; its `at` tells how old it is.
    pub async fn firing(&self) -> Result<Vec<LoggedAlert>, RedisError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for e in self.recent(KEEP).await? {
            if seen.insert((e.alert.clone(), e.process.clone())) && e.firing() {
                out.push(e);
            }
        }
        Ok(out)
    }
}
