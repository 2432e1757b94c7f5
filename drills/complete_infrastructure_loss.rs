//! Decision matrix: "Complete infrastructure loss — Full restore from backup
//! — < 4 hours".
//!
//! Seed the ledger, back it up to S3, keep writing, then lose the primary
//! server entirely (killed, data directory deleted). Bring up a new server,
//! restore the newest backup from S3 exactly as the playbook's section 3.2
//! does, run the playbook's checks, and assert RTO and RPO. The rows written
//! after the backup are the loss: the drill proves the restore holds exactly
//! what the manifest says and nothing written later.
//!
//! Runs on every backend (`DRILL_ENV`). On staging it seeds, writes and
//! destroys nothing: it restores the newest existing backup into a new
//! `<db>_restore_<stamp>` database on the staging server, counts the rows
//! the source holds beyond the backup as the loss (read only), asserts the
//! same checks, and drops its copy at the end.

#[tokio::test]
async fn complete_infrastructure_loss() {
    drillbook::drills::complete_infrastructure_loss::run()
        .await
        .assert_passed();
}
