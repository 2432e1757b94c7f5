//! Streaming-replication standby and failover: a second cluster built with
//! `pg_basebackup` from the primary, following it over a replication
//! connection, promoted when the primary is lost.
//!
//! The replication stream runs through a [`ReplicationLink`], a loopback TCP
//! relay the drill controls: [`ReplicationLink::stall`] holds back the bytes
//! from the primary, as a congested link between regions would, so a drill
//! can make the standby lag by a known amount and measure what failover then
//! loses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    #[error("the standby {standby} did not finish promotion within 60 s; check its log")]
    NotPromoted { standby: String },
}

pub type Result<T, E = FailoverError> = std::result::Result<T, E>;

/// A TCP relay between the standby and the primary that can be stalled.
#[derive(Debug)]
pub struct ReplicationLink {
    port: u16,
    stalled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplicationLink {
    /// Listens on a free loopback port and relays every connection to `upstream_port`.
    pub async fn start(upstream_port: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| FailoverError::Io {
                context: "listen for the replication link".into(),
                source,
            })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stalled);
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        return;
                    };
                    let (mut down_read, mut down_write) = down.into_split();
                    let (mut up_read, mut up_write) = up.into_split();
                    let to_primary = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut down_read, &mut up_write).await;
                    });
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        while flag.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        match up_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                // Bytes read while a stall began wait for its end.
                                while flag.load(Ordering::Relaxed) {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                                if down_write.write_all(&buffer[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    to_primary.abort();
                });
            }
        });
        Ok(Self { port, stalled, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Holds back everything the primary sends until [`Self::resume`].
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }

    pub fn resume(&self) {
        self.stalled.store(false, Ordering::Relaxed);
    }
}

impl Drop for ReplicationLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds a hot standby of `primary` (base backup over replication, then
/// streaming) that connects through `via_port` (a [`ReplicationLink`], or the
/// primary's own port). Returns once the standby accepts read-only queries.
pub async fn create_standby(bins: &PgBinaries, primary: &Cluster, via_port: u16) -> Result<Cluster> {
    let work = tempfile::Builder::new()
        .prefix("drillbook-standby-")
        .tempdir()
        .map_err(|source| FailoverError::Io {
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
