//! Application-like writes against the fixture schema, the way ImmoflowMe
//! itself writes: audit rows through the chain trigger, ledger postings,
//! billing runs. Drills use them to create data whose loss they then measure.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::pg::{ConnInfo, PgError};

/// What [`write_activity`] committed.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    /// `audit_logs.id` of every row written, in commit order.
    pub audit_ids: Vec<i64>,
    pub ledger_entry_ids: Vec<i64>,
    /// Commit time of the newest row written.
    pub newest: DateTime<Utc>,
}

/// Commits `events` audit rows (one transaction each, as requests would),
/// each with a matching charge posted to tenant 1's ledger.
pub async fn write_activity(target: &ConnInfo, events: usize) -> Result<Activity, PgError> {
    let mut conn = PgConnection::connect_with(&target.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {target}")))?;
    let mut activity = Activity {
        audit_ids: Vec::new(),
        ledger_entry_ids: Vec::new(),
        newest: DateTime::<Utc>::MIN_UTC,
    };
    for n in 0..events {
        let mut tx = conn.begin().await.map_err(PgError::sql("begin a write"))?;
        // Several sessions may write at once: they take turns for the next ledger id.
        sqlx::query("SELECT pg_advisory_xact_lock(7243)")
            .execute(&mut *tx)
            .await
            .map_err(PgError::sql("wait for the ledger's next id"))?;
        let (ledger_id,): (i64,) = sqlx::query_as(
            "INSERT INTO ledger_entries (id, tenant_id, type, amount, reference, created_at)
             SELECT coalesce(max(id), 0) + 1, 1, 'charge', 12.50, 'drill:late-fee', clock_timestamp()
             FROM ledger_entries RETURNING id",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(PgError::sql("post a ledger entry"))?;
        let (audit_id, at): (i64, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO audit_logs (tenant_id, actor, action, entity_type, entity_id, payload)
             VALUES (1, 'system:drill', 'ledger.posted', 'ledger_entry', $1, $2)
             RETURNING id, created_at",
        )
        .bind(ledger_id.to_string())
        .bind(format!(r#"{{"sequence":{n},"amount_cents":1250}}"#))
        .fetch_one(&mut *tx)
        .await
        .map_err(PgError::sql("append to the audit log"))?;
        tx.commit().await.map_err(PgError::sql("commit a write"))?;
        activity.audit_ids.push(audit_id);
        activity.ledger_entry_ids.push(ledger_id);
        activity.newest = activity.newest.max(at);
    }
    let _ = conn.close().await;
    Ok(activity)
}
