//! Databases under construction: created under a name that says so, given
//! their final name only when complete.
//!
//! A restore (full, or the scratch copy of a single-table restore) creates
//! its database as `drillbook_incomplete_<boot>_<pid>_<start>_<random>`: the
//! name itself records its owner (the start of this machine's boot id, the
//! pid and its start time), so no instant exists at which the database is
//! there and its owner unknown, and a comment records the name it is meant
//! to get. Only once `pg_restore` succeeded and every
//! check passed is it renamed ([`IncompleteDatabase::complete`]). So no
//! database under a final name is ever half restored or unverified, whatever
//! is killed when: killing drillbook leaves at most an incomplete database,
//! whose name says what it is.
//!
//! Leftovers are dropped by [`reap`], which every command that creates an
//! incomplete database runs first against its server: an incomplete database
//! whose owner is known to be gone (same boot of this machine, process not
//! running) is dropped and logged. An owner on another machine cannot be
//! judged from here: its database is logged and left alone.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use super::{ConnInfo, PgError, Result, quote_ident};
use crate::scratch::ProcessTag;

/// Every incomplete database's name starts with this.
pub const PREFIX: &str = "drillbook_incomplete_";

/// The comment's first word, so a stranger's comment is never parsed as ours.
const COMMENT_TAG: &str = "drillbook-incomplete";

/// A database being restored, not yet under its final name.
#[derive(Debug)]
pub struct IncompleteDatabase {
    admin: ConnInfo,
    name: String,
}

impl IncompleteDatabase {
    /// Creates an empty incomplete database meant to become `final_name`,
    /// owned by this process.
    pub async fn create(admin: &ConnInfo, final_name: &str) -> Result<Self> {
        // "unknown" is unjudgeable: never reaped, dropped only on this process's own failure path.
        let owner = ProcessTag::current().map_or_else(|| "unknown".to_owned(), ToString::to_string);
        let name = format!("{PREFIX}{owner}_{}", random_suffix());
        super::create_database(admin, &name).await?;
        let comment = format!("{COMMENT_TAG} final={final_name}");
        let sql = format!(
            "COMMENT ON DATABASE {} IS {}",
            quote_ident(&name),
            quote_literal(&comment)
        );
        let incomplete = Self {
            admin: admin.clone(),
            name,
        };
        if let Err(e) = execute(admin, &sql, "record the owner of an incomplete database").await {
            incomplete.discard().await;
            return Err(e);
        }
        Ok(incomplete)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How to reach it.
    pub fn conn(&self) -> ConnInfo {
        self.admin.with_database(&self.name)
    }

    /// Gives the database its final name (which must not exist) and drops
    /// the owner comment. The rename needs no other sessions on it: callers
    /// close theirs first.
    ///
    /// # Errors
    /// [`PgError::DatabaseExists`] when `final_name` was taken meanwhile;
    /// the incomplete database is then dropped, as on any error here.
    pub async fn complete(self, final_name: &str) -> Result<ConnInfo> {
        let renamed = async {
            let mut conn = connect(&self.admin).await?;
            let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(final_name)
                .fetch_one(&mut conn)
                .await
                .map_err(PgError::sql("look up existing databases"))?;
            if taken {
                return Err(PgError::DatabaseExists {
                    database: final_name.to_owned(),
                });
            }
            crate::failpoint!("incomplete::before_rename");
            let rename = format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(&self.name),
                quote_ident(final_name)
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(rename))
                .execute(&mut conn)
                .await
                .map_err(PgError::sql(format!("rename {} to {final_name:?}", self.name)))?;
            // Renamed: the comment no longer matters to the reaper, which
            // only looks at incomplete names; cleared so nothing stale stays.
            let clear = format!("COMMENT ON DATABASE {} IS NULL", quote_ident(final_name));
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(clear)).execute(&mut conn).await {
                tracing::warn!(database = final_name, error = %e, "could not clear the restore's owner comment");
            }
            let _ = conn.close().await;
            Ok(self.admin.with_database(final_name))
        }
        .await;
        if renamed.is_err() {
            drop_database(&self.admin, &self.name).await;
        }
        renamed
    }

    /// Drops the database (best effort, logged: something already failed).
    pub async fn discard(self) {
        drop_database(&self.admin, &self.name).await;
    }
}

/// An incomplete database found on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub name: String,
    /// The name it was meant to get.
    pub final_name: Option<String>,
    /// Whether its owner is known to be gone (and so it was dropped).
    pub owner_gone: bool,
}

/// Drops the incomplete databases on `admin`'s server whose owner is gone
/// (see the module docs) and returns every incomplete database found.
/// `also_this_process` drops this process's own too: for a command that
/// was interrupted and has dropped the work that wrote to them.
///
/// The server sessions of those owners are terminated first, and waited
/// for: a `CREATE DATABASE` or `pg_restore` whose client is gone runs on
/// until the server next talks to it, and would otherwise commit a database
/// after the listing below.
pub async fn reap(admin: &ConnInfo, also_this_process: bool) -> Result<Vec<Leftover>> {
    let judge = |tag: &ProcessTag| tag.is_gone() || (also_this_process && tag.is_this_process());
    let mut conn = connect(admin).await?;
    stop_sessions(&mut conn, judge).await?;
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database \
         WHERE starts_with(datname, $1) ORDER BY datname",
    )
    .bind(PREFIX)
    .fetch_all(&mut conn)
    .await
    .map_err(PgError::sql("list incomplete databases"))?;
    let _ = conn.close().await;

    let mut found = Vec::new();
    for (name, comment) in rows {
        let final_name = comment.as_deref().and_then(final_name_in_comment);
        let owner = owner_in_name(&name);
        let owner_gone = owner.as_ref().is_some_and(judge);
        if owner_gone {
            tracing::warn!(
                database = name,
                meant_to_be = final_name.unwrap_or("?"),
                "dropping an incomplete database whose restore was interrupted"
            );
            drop_database(admin, &name).await;
        } else if !owner.as_ref().is_some_and(ProcessTag::is_this_process) {
            tracing::info!(
                database = name,
                "an incomplete database of another process (running, or on another machine) is left alone"
            );
        }
        found.push(Leftover {
            name,
            final_name: final_name.map(str::to_owned),
            owner_gone,
        });
    }
    Ok(found)
}

/// How long [`reap`] waits for terminated sessions to end.
const SESSIONS_END_WITHIN: Duration = Duration::from_secs(30);

/// Terminates the drillbook sessions whose process `judge` says is gone
/// (every session names its process: [`super::conn::session_name`]) and
/// waits until they have ended.
async fn stop_sessions(conn: &mut PgConnection, judge: impl Fn(&ProcessTag) -> bool) -> Result<()> {
    let sessions: Vec<(i32, String)> = sqlx::query_as(
        "SELECT pid, application_name FROM pg_stat_activity \
         WHERE starts_with(application_name, $1) AND pid <> pg_backend_pid()",
    )
    .bind(super::conn::SESSION_PREFIX)
    .fetch_all(&mut *conn)
    .await
    .map_err(PgError::sql("list drillbook's sessions"))?;
    let doomed: Vec<i32> = sessions
        .into_iter()
        .filter(|(_, name)| {
            let tag = name.strip_prefix(super::conn::SESSION_PREFIX);
            tag.and_then(ProcessTag::parse_prefix)
                .is_some_and(|(tag, _)| judge(&tag))
        })
        .map(|(pid, _)| pid)
        .collect();
    if doomed.is_empty() {
        return Ok(());
    }
    tracing::info!(
        sessions = doomed.len(),
        "terminating the server sessions of a stopped drillbook"
    );
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(&doomed)
        .execute(&mut *conn)
        .await
        .map_err(PgError::sql("terminate a stopped drillbook's sessions"))?;
    let deadline = Instant::now() + SESSIONS_END_WITHIN;
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
            .bind(&doomed)
            .fetch_one(&mut *conn)
            .await
            .map_err(PgError::sql("wait for terminated sessions"))?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            // Reaping on is still right: a database committed later is
            // dropped by the next reap, its owner still gone.
            tracing::warn!(
                sessions = left,
                "terminated sessions still running after {SESSIONS_END_WITHIN:?}"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The owner recorded in an incomplete database's name.
fn owner_in_name(name: &str) -> Option<ProcessTag> {
    ProcessTag::parse_prefix(name.strip_prefix(PREFIX)?).map(|(tag, _)| tag)
}

/// The final name a comment written by [`IncompleteDatabase::create`] records.
fn final_name_in_comment(comment: &str) -> Option<&str> {
    comment.strip_prefix(COMMENT_TAG)?.trim().strip_prefix("final=")
}

async fn connect(admin: &ConnInfo) -> Result<PgConnection> {
    PgConnection::connect_with(&admin.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {admin}")))
}

async fn execute(admin: &ConnInfo, sql: &str, what: &str) -> Result<()> {
    let mut conn = connect(admin).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .map_err(PgError::sql(what.to_owned()))?;
    let _ = conn.close().await;
    Ok(())
}

/// Best effort: the database is dropped because something already failed.
pub(crate) async fn drop_database(admin: &ConnInfo, database: &str) {
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(database));
    match execute(admin, &sql, "drop a database").await {
        Ok(()) => tracing::info!(database, "dropped the incomplete database"),
        Err(e) => tracing::error!(database, error = %e, "could not drop an incomplete database; drop it by hand"),
    }
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn random_suffix() -> String {
    use rand::Rng;
    let bytes: [u8; 3] = rand::rng().random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_read_back() {
        let comment = format!("{COMMENT_TAG} final=immoflowme_restore_1");
        assert_eq!(final_name_in_comment(&comment), Some("immoflowme_restore_1"));
        assert_eq!(final_name_in_comment("someone else's comment"), None);
    }

    #[test]
    fn names_record_their_owner_fit_postgres_identifiers_and_say_what_they_are() {
        let me = ProcessTag::current().expect("this process has /proc");
        let name = format!("{PREFIX}{me}_{}", random_suffix());
        assert!(name.len() <= 63, "{name} ({} bytes)", name.len());
        assert!(name.contains("incomplete"));
        assert_eq!(
            owner_in_name(&name).as_ref(),
            Some(me),
            "the name reads back as this process"
        );
        assert_eq!(owner_in_name("drillbook_incomplete_unknown_abc"), None);
    }
}
