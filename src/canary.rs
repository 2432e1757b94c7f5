//! Canary writes: during a drill a task commits a timestamped row every few
//! milliseconds to its own table (`drill_canary`). After recovery the
//! surviving rows measure the RPO exactly (incident time minus the newest
//! surviving canary) and prove the recovery kept a clean prefix: every
//! canary committed before the recovery point present, none after it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pg::{ConnInfo, PgError};

pub const CANARY_TABLE: &str = "drill_canary";

/// One acknowledged canary commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Canary {
    pub id: i64,
    /// `clock_timestamp()` inside the inserting transaction: the commit is later.
    pub written_at: DateTime<Utc>,
    /// When the client saw the commit acknowledged: the commit is earlier.
    pub acked_at: DateTime<Utc>,
}

/// A running canary writer; [`CanaryWriter::stop`] returns what it committed.
#[derive(Debug)]
pub struct CanaryWriter {
    committed: Arc<Mutex<Vec<Canary>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Option<String>>,
}

/// What the writer did.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryLog {
    pub committed: Vec<Canary>,
    /// Why it stopped early (the server went away), if it did.
    pub ended_by: Option<String>,
}

impl CanaryWriter {
    /// Creates the canary table if needed and starts committing one row every `interval`.
    pub async fn start(target: &ConnInfo, interval: Duration) -> Result<Self, PgError> {
        let mut conn = PgConnection::connect_with(&target.connect_options())
            .await
            .map_err(PgError::sql(format!("connect to {target}")))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {CANARY_TABLE} (
                 id bigint PRIMARY KEY,
                 written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )))
        .execute(&mut conn)
        .await
        .map_err(PgError::sql("create the canary table"))?;
        let committed = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let sink = Arc::clone(&committed);
        let task = tokio::spawn(async move {
            let insert = format!("INSERT INTO {CANARY_TABLE} (id) VALUES ($1) RETURNING written_at");
            for id in 1i64.. {
                if *stopped.borrow() {
                    break;
                }
                let written: Result<DateTime<Utc>, sqlx::Error> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(insert.clone()))
                        .bind(id)
                        .fetch_one(&mut conn)
                        .await;
                match written {
                    Ok(written_at) => sink.lock().expect("canary log").push(Canary {
                        id,
                        written_at,
                        acked_at: Utc::now(),
                    }),
                    Err(e) => return Some(e.to_string()),
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => {}
                }
            }
            let _ = conn.close().await;
            None
        });
        Ok(Self { committed, stop, task })
    }

    /// The canaries acknowledged so far.
    pub fn committed(&self) -> Vec<Canary> {
        self.committed.lock().expect("canary log").clone()
    }

    pub async fn stop(self) -> CanaryLog {
        let _ = self.stop.send(true);
        let ended_by = self
            .task
            .await
            .unwrap_or_else(|e| Some(format!("canary task panicked: {e}")));
        let committed = self.committed.lock().expect("canary log").clone();
        CanaryLog { committed, ended_by }
    }
}

/// The canaries found in a recovered database, judged against what was acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    pub acknowledged: usize,
    pub surviving: usize,
    /// `written_at` of the newest surviving canary: the RPO's reference.
    pub newest_surviving: Option<DateTime<Utc>>,
    /// Acknowledged before the recovery point but absent: lost data that
    /// should not have been lost.
    pub missing_before_point: Vec<i64>,
    /// Present although written after the recovery point.
    pub present_after_point: Vec<i64>,
}

impl CanaryReport {
    pub fn clean(&self) -> bool {
        self.missing_before_point.is_empty() && self.present_after_point.is_empty()
    }
}

/// Reads the canary table of `recovered` and checks it against `log`.
///
/// With `point = Some(t)` (a PITR target time): every canary acknowledged by
/// `t` must be present and none written after `t`. With `None` (crash,
/// failover: whatever survived) the survivors must be a prefix of the
/// acknowledged sequence: no canary older than the newest survivor missing.
pub async fn check_canaries(
    recovered: &ConnInfo,
    log: &[Canary],
    point: Option<DateTime<Utc>>,
) -> Result<CanaryReport, PgError> {
    let mut conn = PgConnection::connect_with(&recovered.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {recovered}")))?;
    let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, written_at FROM {CANARY_TABLE} ORDER BY id"
    )))
    .fetch_all(&mut conn)
    .await
    .map_err(PgError::sql("read the canary table"))?;
    let _ = conn.close().await;
    let present: std::collections::BTreeSet<i64> = rows.iter().map(|(id, _)| *id).collect();
    let newest_surviving = rows.iter().map(|(_, at)| *at).max();
    let max_present = present.last().copied().unwrap_or(0);
    let (missing_before_point, present_after_point) = match point {
        Some(t) => (
            log.iter()
                .filter(|c| c.acked_at <= t && !present.contains(&c.id))
                .map(|c| c.id)
                .collect(),
            rows.iter().filter(|(_, at)| *at > t).map(|(id, _)| *id).collect(),
        ),
        None => (
            log.iter()
                .filter(|c| c.id < max_present && !present.contains(&c.id))
                .map(|c| c.id)
                .collect(),
            Vec::new(),
        ),
    };
    Ok(CanaryReport {
        acknowledged: log.len(),
        surviving: rows.len(),
        newest_surviving,
        missing_before_point,
        present_after_point,
    })
}
