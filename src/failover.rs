//! Streaming-replication standby and failover: a second server built with
//! `pg_basebackup` from the primary, following it over a replication
//! connection, promoted when the primary is lost.
//!
//! Everything but [`create_standby`] (a local cluster) talks SQL to a
//! server's [`ConnInfo`], so the same calls drive a local standby and a
//! standby container. [`cut_replication`] takes the link between the
//! regions down from the standby's side, so a drill can make the standby lag
//! by a known amount and measure what failover then loses.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::Connection;

use crate::pg::tools::basebackup_plain;
use crate::pg::{Cluster, ClusterOptions, ConnInfo, PgBinaries, PgError, quote_literal};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FailoverError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("failed to {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the standby did not catch up with the primary within {seconds} s (replayed {replayed}, primary at {primary}); \
         check the standby's log for replication errors"
    )]
    NotCaughtUp {
        seconds: u64,
        replayed: String,
        primary: String,
    },
    #[error(
        "the standby {standby} still ran its WAL receiver {seconds} s after its primary_conninfo was emptied; check its log"
    )]
    StillReceiving { standby: String, seconds: u64 },
    #[error("the standby {standby} did not finish promotion within 60 s; check its log")]
    NotPromoted { standby: String },
}

pub type Result<T, E = FailoverError> = std::result::Result<T, E>;

/// Builds a hot standby of `primary` (base backup over replication, then
/// streaming) that connects to `via_port` on loopback (the primary's own
/// port, or a relay in front of it). Returns once the standby accepts read-only queries.
pub async fn create_standby(bins: &PgBinaries, primary: &Cluster, via_port: u16) -> Result<Cluster> {
    let work = crate::scratch::owned_tempdir("drillbook-standby-").map_err(|source| FailoverError::Io {
        context: "create a temp dir for the standby copy".into(),
        source,
    })?;
    let data = work.path().join("data");
    basebackup_plain(bins, &primary.admin(), &data).await?;
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| FailoverError::Io { context, source }
    };
    std::fs::write(data.join("standby.signal"), b"").map_err(io("write standby.signal"))?;
    // In the standby's own config file (mode 600), not on its command line
    // where `ps` would show the password.
    let conninfo = format!(
        "host=127.0.0.1 port={via_port} user=postgres password={} application_name=drill_standby",
        primary.password().expose()
    );
    let mut auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
    auto.push_str(&format!("\nprimary_conninfo = {}\n", quote_literal(&conninfo)));
    std::fs::write(data.join("postgresql.auto.conf"), auto).map_err(io("write the standby's primary_conninfo"))?;
    let options = ClusterOptions::default()
        .setting("hot_standby", "on")
        .setting("wal_receiver_status_interval", "1s");
    let standby = Cluster::start_from_data_dir(bins, &data, primary.password().clone(), options).await?;
    Ok(standby)
}

/// Where a standby's replay is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayState {
    pub replayed_lsn: Option<String>,
    /// Commit time of the last replayed transaction.
    pub last_replayed_commit: Option<DateTime<Utc>>,
}

/// Where the standby `standby` (a superuser's connection facts) is in its replay.
pub async fn replay_state(standby: &ConnInfo) -> Result<ReplayState> {
    let mut conn = connect(standby, "read the standby's replay position").await?;
    let (replayed_lsn, last_replayed_commit): (Option<String>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()")
            .fetch_one(&mut conn)
            .await
            .map_err(PgError::sql("read the standby's replay position"))?;
    let _ = conn.close().await;
    Ok(ReplayState {
        replayed_lsn,
        last_replayed_commit,
    })
}

async fn connect(server: &ConnInfo, why: &str) -> Result<sqlx::PgConnection> {
    Ok(sqlx::PgConnection::connect_with(&server.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {server} to {why}")))?)
}

/// Waits until the standby replayed everything the primary has written so far.
pub async fn wait_caught_up(primary: &ConnInfo, standby: &ConnInfo, timeout: Duration) -> Result<()> {
    let mut conn = connect(primary, "read its WAL position").await?;
    let target: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut conn)
        .await
        .map_err(PgError::sql("read the primary's WAL position"))?;
    let _ = conn.close().await;
    let target_lsn = crate::wal::parse_lsn(&target).unwrap_or(0);
    let deadline = Instant::now() + timeout;
    loop {
        let state = replay_state(standby).await?;
        let replayed = state
            .replayed_lsn
            .as_deref()
            .and_then(crate::wal::parse_lsn)
            .unwrap_or(0);
        if replayed >= target_lsn {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(FailoverError::NotCaughtUp {
                seconds: timeout.as_secs(),
                replayed: state.replayed_lsn.unwrap_or_else(|| "nothing".into()),
                primary: target,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes the replication link down from the standby's side: its
/// `primary_conninfo` is emptied (`ALTER SYSTEM`, reload), and this returns
/// once its WAL receiver is gone, so from then on it receives nothing.
/// Works on any standby reachable over TCP.
pub async fn cut_replication(standby: &ConnInfo, timeout: Duration) -> Result<()> {
    let mut conn = connect(standby, "cut its replication link").await?;
    // Two statements: ALTER SYSTEM refuses to run in the implicit
    // transaction of a multi-statement query.
    sqlx::raw_sql("ALTER SYSTEM SET primary_conninfo = ''")
        .execute(&mut conn)
        .await
        .map_err(PgError::sql("empty the standby's primary_conninfo"))?;
    sqlx::raw_sql("SELECT pg_reload_conf()")
        .execute(&mut conn)
        .await
        .map_err(PgError::sql("reload the standby's configuration"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let receivers: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_wal_receiver")
            .fetch_one(&mut conn)
            .await
            .map_err(PgError::sql("read the standby's WAL receiver"))?;
        if receivers == 0 {
            let _ = conn.close().await;
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(FailoverError::StillReceiving {
                standby: standby.to_string(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Promotes the standby (`pg_promote`, waiting up to 60 s) and proves it
/// takes writes. Returns the time it took. Works on any server reachable
/// over TCP: a local cluster or a container.
pub async fn promote(standby: &ConnInfo) -> Result<Duration> {
    let started = Instant::now();
    let mut conn = connect(standby, "promote it").await?;
    let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, 60)")
        .fetch_one(&mut conn)
        .await
        .map_err(PgError::sql("promote the standby (pg_promote)"))?;
    if !promoted {
        return Err(FailoverError::NotPromoted {
            standby: standby.to_string(),
        });
    }
    sqlx::raw_sql("CREATE TEMP TABLE drill_promoted_probe (x int); INSERT INTO drill_promoted_probe VALUES (1)")
        .execute(&mut conn)
        .await
        .map_err(PgError::sql("write to the promoted standby"))?;
    let _ = conn.close().await;
    Ok(started.elapsed())
}
