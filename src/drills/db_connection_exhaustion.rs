//! Decision matrix: "DB connection exhaustion — Kill queries + restart — < 15 min".
//!
//! A leaking application fills every connection slot with idle sessions and
//! long-running queries until the server refuses new ones. The responder
//! (a superuser on a reserved slot) detects it from `pg_stat_activity`,
//! terminates sessions idle first and oldest first, never its own, and
//! proves the application can connect and write again.

use std::time::Duration;

use crate::drill::{Drill, DrillSummary, Result, StepContext};
use crate::fixtures::FixtureSpec;
use crate::pg::{Secret, quote_ident, quote_literal};
use crate::playbook::Scenario;
use crate::sessions::{Flood, relieve, responder, saturation};
use sqlx::{Connection, PgConnection};

const MAX_CONNECTIONS: i64 = 30;
/// Slots the responder frees: more than the idle sessions, so long-running
/// queries are terminated too (after every idle one).
const FREE_AFTER: i64 = 20;

pub async fn run() -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("db-connection-exhaustion", Scenario::DbConnectionExhaustion)?;
    let outcome = story(&mut drill).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill) -> Result<()> {
    drill.property("max_connections", MAX_CONNECTIONS);
    let profile = super::drill_profile()?;
    // Its own server with few connection slots: on staging (a shared
    // server) this fails, loudly, with EnvError::Unsupported.
    let max_connections = MAX_CONNECTIONS.to_string();
    let env = drill
        .step(
            "bring up environment",
            crate::env::from_env_with(&[("max_connections", &max_connections)]),
        )
        .await?;
    super::steps::record_setup(drill, env.backend(), Some(profile), &env.admin()).await?;
    // The ledger the application serves: the post-recovery checklist
    // (playbook section 7) checks it is intact once the flood is relieved.
    drill
        .step("seed fixture ledger", env.seed(FixtureSpec::ending_now(profile, 5)))
        .await?;
    let admin = env.admin();
    let mut app = env.source();
    app.user = "immoflowme_app_drill".into();
    app.password = Secret::new(format!("pw-{}", std::process::id()));
    const ROLE: &str = "create the application's role and heartbeat table";
    let mut setup = PgConnection::connect_with(&env.source().connect_options())
        .await
        .step(ROLE)?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN PASSWORD {pw};
         GRANT ALL ON SCHEMA public TO {role};
         CREATE TABLE app_heartbeat (at timestamptz NOT NULL DEFAULT now());
         GRANT INSERT, SELECT ON app_heartbeat TO {role};",
        role = quote_ident(&app.user),
        pw = quote_literal(app.password.expose())
    )))
    .execute(&mut setup)
    .await
    .step(ROLE)?;
    setup.close().await.step(ROLE)?;
    let mut me = responder(&admin)
        .await
        .step("connect the responder on a reserved slot")?;

    drill.incident("connection leak: the application holds every connection slot");
    let flood = Flood::open(&app, 200)
        .await
        .step("flood the server with the application's sessions")?;
    drill.property("sessions_leaked", flood.sessions());
    drill.check(
        "the server refused the application",
        flood.refusal.contains("too many clients") || flood.refusal.contains("reserved"),
        flood.refusal.clone(),
    );

    let before = drill.step("detect: read pg_stat_activity", saturation(&mut me)).await?;
    drill.check("exhaustion detected", before.exhausted(), format!("{before:?}"));
    let terminated = drill
        .step(
            "terminate sessions (idle and oldest first)",
            relieve(&mut me, FREE_AFTER),
        )
        .await?;
    drill.property("sessions_terminated", terminated.len());
    let first_active = terminated
        .iter()
        .position(|t| t.state == "active")
        .unwrap_or(terminated.len());
    drill.check(
        "idle sessions terminated before any running query",
        terminated[first_active..].iter().all(|t| t.state == "active") && first_active > 0,
        format!("{:?}", terminated.iter().map(|t| &t.state).collect::<Vec<_>>()),
    );
    let oldest_first =
        |group: &[crate::sessions::Terminated]| group.windows(2).all(|w| w[0].backend_start <= w[1].backend_start);
    drill.check(
        "oldest first within each group",
        oldest_first(&terminated[..first_active]) && oldest_first(&terminated[first_active..]),
        format!("{} idle, {} active", first_active, terminated.len() - first_active),
    );
    drill.check(
        "long-running queries were terminated too",
        terminated.len() > first_active,
        format!("{} active terminated", terminated.len() - first_active),
    );
    let still_mine: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut me)
        .await
        .step("query on the responder's own session")?;
    drill.check("the responder's own session survived", still_mine == 1, "");

    let after = saturation(&mut me)
        .await
        .step("read pg_stat_activity after the relief")?;
    drill.check(
        "application slots are free again",
        after.free_for_applications() >= FREE_AFTER,
        format!("{after:?}"),
    );
    let reconnect = async {
        let mut conn = PgConnection::connect_with(&app.connect_options()).await?;
        sqlx::query("INSERT INTO app_heartbeat DEFAULT VALUES")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(())
    };
    drill.step("new application connections succeed", reconnect).await?;
    drill.verified();
    // Sessions were terminated, no data touched: nothing can be lost.
    drill.nothing_lost();
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(drill, &env.source(), Some((env.binaries(), &admin, env.store()))).await?;

    flood.close().await;
    me.close().await.step("close the responder's session")?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    env.cleanup().await.step("clean up the environment")?;
    Ok(())
}
