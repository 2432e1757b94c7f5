//! Connection exhaustion: detecting a server whose `max_connections` are all
//! taken and relieving it by terminating sessions, idle ones first, oldest
//! first, never the responder's own.
//!
//! The responder connects as a superuser, which PostgreSQL still admits on
//! the `superuser_reserved_connections` slots when ordinary roles are refused.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;

use crate::pg::{ConnInfo, PgError};

/// `application_name` of the responder's own sessions, which are never terminated.
pub const RESPONDER_APPLICATION: &str = "drillbook-responder";

/// How full the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Saturation {
    pub max_connections: i64,
    pub reserved: i64,
    pub client_sessions: i64,
    pub idle: i64,
    pub active: i64,
}

impl Saturation {
    /// Slots an ordinary (non-superuser) role may still take.
    pub fn free_for_applications(&self) -> i64 {
        (self.max_connections - self.reserved - self.client_sessions).max(0)
    }

    pub fn exhausted(&self) -> bool {
        self.free_for_applications() == 0
    }
}

/// Reads the server's connection usage.
pub async fn saturation(conn: &mut PgConnection) -> Result<Saturation, PgError> {
    let (max_connections, reserved, client_sessions, idle, active): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT current_setting('max_connections')::bigint,
                current_setting('superuser_reserved_connections')::bigint,
                count(*),
                count(*) FILTER (WHERE state = 'idle'),
                count(*) FILTER (WHERE state = 'active')
         FROM pg_stat_activity WHERE backend_type = 'client backend'",
    )
    .fetch_one(conn)
    .await
    .map_err(PgError::sql("read connection usage from pg_stat_activity"))?;
    Ok(Saturation {
        max_connections,
        reserved,
        client_sessions,
        idle,
        active,
    })
}

/// A session [`relieve`] terminated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Terminated {
    pub pid: i32,
    pub state: String,
    pub backend_start: DateTime<Utc>,
    pub application_name: String,
}

/// Terminates client sessions until ordinary roles have `free` slots again:
/// idle sessions first, then idle-in-transaction, then active ones, each
/// group oldest first. Never this connection, never sessions whose
/// `application_name` is [`RESPONDER_APPLICATION`], never other processes
/// than client backends. Returns who was terminated, in order.
pub async fn relieve(conn: &mut PgConnection, free: i64) -> Result<Vec<Terminated>, PgError> {
    let now = saturation(conn).await?;
    let needed = (free - now.free_for_applications()).max(0);
    let candidates: Vec<(i32, String, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT pid, coalesce(state, ''), backend_start, application_name
         FROM pg_stat_activity
         WHERE backend_type = 'client backend'
           AND pid <> pg_backend_pid()
           AND application_name <> $1
         ORDER BY CASE state WHEN 'idle' THEN 0 WHEN 'idle in transaction' THEN 1
                             WHEN 'idle in transaction (aborted)' THEN 1 ELSE 2 END,
                  backend_start, pid
         LIMIT $2",
    )
    .bind(RESPONDER_APPLICATION)
    .bind(needed)
    .fetch_all(&mut *conn)
    .await
    .map_err(PgError::sql("list sessions to terminate"))?;
    let mut terminated = Vec::new();
    for (pid, state, backend_start, application_name) in candidates {
        // Waits up to 5 s for the backend to exit, so its slot is free after.
        let gone: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(pid)
            .fetch_one(&mut *conn)
            .await
            .map_err(PgError::sql(format!("terminate session {pid}")))?;
        if gone {
            terminated.push(Terminated {
                pid,
                state,
                backend_start,
                application_name,
            });
        }
    }
    Ok(terminated)
}

/// The responder's own connection (superuser, tagged so [`relieve`] spares it).
pub async fn responder(admin: &ConnInfo) -> Result<PgConnection, PgError> {
    PgConnection::connect_with(&admin.connect_options().application_name(RESPONDER_APPLICATION))
        .await
        .map_err(PgError::sql(format!("connect to {admin} as the responder")))
}

/// A connection leak as an incident: sessions opened until the server
/// refuses more, alternating idle ones and ones running a long query.
#[derive(Debug)]
pub struct Flood {
    idle: Vec<PgConnection>,
    busy: Vec<JoinHandle<()>>,
    /// The error the server answered the first refused connection with.
    pub refusal: String,
}

impl Flood {
    /// Opens sessions to `target` (an ordinary role) until refused, at most `limit`.
    pub async fn open(target: &ConnInfo, limit: usize) -> Result<Self, PgError> {
        let mut flood = Self {
            idle: Vec::new(),
            busy: Vec::new(),
            refusal: String::new(),
        };
        for n in 0..limit {
            let options = target.connect_options().application_name("leaky-worker");
            let mut conn = match PgConnection::connect_with(&options).await {
                Ok(conn) => conn,
                Err(e) => {
                    flood.refusal = e.to_string();
                    return Ok(flood);
                }
            };
            if n % 2 == 0 {
                sqlx::query("SELECT 1")
                    .execute(&mut conn)
                    .await
                    .map_err(PgError::sql("use a session"))?;
                flood.idle.push(conn);
            } else {
                flood.busy.push(tokio::spawn(async move {
                    let _ = sqlx::query("SELECT pg_sleep(3600)").execute(&mut conn).await;
                }));
                // Let the query start, so the session shows as active.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(flood)
    }

    pub fn sessions(&self) -> usize {
        self.idle.len() + self.busy.len()
    }

    /// Drops whatever is left (terminated sessions are already gone).
    pub async fn close(self) {
        for conn in self.idle {
            let _ = conn.close().await;
        }
        for task in self.busy {
            task.abort();
        }
    }
}
