//! The opening the detection drills share, on every backend: a database the
//! drill may damage and the backup it recovers from.
//!
//! - Disposable backends (embedded, containers): the fixture ledger is
//!   seeded into the application database and the daily backup taken; the
//!   drill damages the application database itself.
//! - Staging: nothing is seeded or written. The newest existing backup is
//!   restored into a new `<db>_restore_<stamp>` database (recorded by the
//!   staging guard) and the drill damages that copy; the staging database
//!   and bucket are only read.

use crate::backup::backup_database;
use crate::drill::{Drill, Result, StepContext};
use crate::env::{Environment, RestoreTarget};
use crate::fault::Disposable;
use crate::fixtures::FixtureSpec;
use crate::integrity::suite::{SuiteOptions, run_suite};
use crate::pg::{ConnInfo, PgBinaries};
use crate::restore::{BackupChoice, RestoreOptions, RestoreReport, find_backup, restore_database};
use crate::store::manifest::BackupManifest;

use super::Resume;

pub(super) struct Workbench {
    pub env: Environment,
    pub bins: PgBinaries,
    /// The database the drill damages and repairs.
    pub database: ConnInfo,
    /// A superuser (or `CREATEDB` role) on `database`'s server.
    pub admin: ConnInfo,
    /// The backup `database` holds (disposable: taken after seeding;
    /// staging: the newest existing one, restored into the copy).
    pub manifest: BackupManifest,
    /// Proof that `database` may be damaged.
    pub disposable: Disposable,
}

impl Workbench {
    /// Opens the bench, each step a timed phase of `drill`; seeds
    /// `DRILL_PROFILE`'s ledger where it seeds.
    ///
    /// # Errors
    /// [`DrillError::Step`](crate::drill::DrillError::Step) naming the step that failed.
    pub(super) async fn open(drill: &mut Drill, seed: u64) -> Result<Self> {
        let mut env = drill.step("bring up environment", crate::env::from_env()).await?;
        let bins = env.binaries().clone();
        let (database, admin, manifest) = if env.is_disposable() {
            let profile = super::drill_profile()?;
            super::steps::record_setup(drill, env.backend(), Some(profile), &env.admin()).await?;
            let spec = FixtureSpec::ending_now(profile, seed);
            drill
                .data_step("seed fixture ledger", env.seed(spec), super::steps::moved_by_seed)
                .await?;
            let (source, admin) = (env.source(), env.admin());
            let backup = drill
                .data_step(
                    "daily backup to S3",
                    backup_database(&bins, &source, Some(&admin), env.store()),
                    |backup| [crate::drill::Moved::bytes(backup.manifest.dump.bytes)],
                )
                .await?;
            (source, admin, backup.manifest)
        } else {
            // Staging: nothing seeded, the server only read.
            super::steps::record_setup(drill, env.backend(), None, &env.source()).await?;
            let manifest = drill
                .step(
                    "find newest existing backup in S3",
                    find_backup(env.store(), &BackupChoice::Newest),
                )
                .await?;
            let target = drill
                .step("provision a copy to damage", env.provision_restore_target())
                .await?;
            let copy = drill
                .data_step(
                    "restore the newest backup into the drill's own copy",
                    restore_into(&bins, &env, &target, &manifest),
                    |copy: &RestoreReport| {
                        let dump = copy.manifest.dump.bytes;
                        [
                            crate::drill::Moved::bytes(dump).within(copy.download),
                            crate::drill::Moved::bytes(dump).within(copy.restore),
                        ]
                    },
                )
                .await?;
            (copy.target, target.admin, manifest)
        };
        drill.property("backup_stamp", &manifest.stamp);
        let disposable =
            Disposable::owned_by(&env, &database).step("prove the bench's database is the drill's to damage")?;
        Ok(Self {
            env,
            bins,
            database,
            admin,
            manifest,
            disposable,
        })
    }

    /// The integrity suite's options: the chain anchor the bench's backup
    /// recorded, so truncated or rewritten history is found too.
    ///
    /// # Errors
    /// [`DrillError::Step`](crate::drill::DrillError::Step) when the manifest
    /// has no anchor (every drillbook backup records one).
    pub(super) fn suite_options(&self) -> Result<SuiteOptions> {
        let anchor = self
            .manifest
            .anchor
            .clone()
            .step("read the chain anchor the backup's manifest records")?;
        Ok(SuiteOptions {
            anchor: Some(anchor),
            ..SuiteOptions::default()
        })
    }

    /// The recovery of the full-restore detection drills, each step a timed
    /// phase: [`Self::restore_anew`], then the integrity suite on the
    /// restored copy, checked to find nothing (`clean_check` names that
    /// check). Returns the restored server's admin and the restore's report.
    ///
    /// # Errors
    /// [`DrillError::Step`](crate::drill::DrillError::Step) naming the step that failed.
    pub(super) async fn restore_and_verify(
        &mut self,
        drill: &mut Drill,
        clean_check: &str,
    ) -> Result<(ConnInfo, RestoreReport)> {
        let options = self.suite_options()?;
        let (admin, restored) = drill.step("restore database from backup", self.restore_anew()).await?;
        let verified = drill
            .step("verify restored database", run_suite(&restored.target, &options))
            .await?;
        drill.check(clean_check, verified.is_clean(), format!("{:?}", verified.findings));
        Ok((admin, restored))
    }

    /// The full restore after the damage: the bench's backup into a new
    /// target the drill owns (a new server, or a new database on staging).
    /// Returns the target server's admin and the restore's report.
    pub(super) async fn restore_anew(&mut self) -> Result<(ConnInfo, RestoreReport), crate::drill::BoxError> {
        let target = self.env.provision_restore_target().await?;
        let report = restore_into(&self.bins, &self.env, &target, &self.manifest).await?;
        Ok((target.admin, report))
    }

    /// What resuming backups after recovery needs, on a disposable backend
    /// only: on staging a drill never writes a backup into the real catalog
    /// (it would become the newest backup).
    pub(super) fn resume_backups<'a>(&'a self, admin: &'a ConnInfo) -> Option<Resume<'a>> {
        self.env.is_disposable().then(|| (&self.bins, admin, self.env.store()))
    }
}

/// Restores exactly `manifest`'s backup into `target`.
async fn restore_into(
    bins: &PgBinaries,
    env: &Environment,
    target: &RestoreTarget,
    manifest: &BackupManifest,
) -> Result<RestoreReport, crate::restore::RestoreError> {
    let options = RestoreOptions {
        target_database: Some(target.database.clone()),
        backup: BackupChoice::Stamp(manifest.stamp.clone()),
        ..RestoreOptions::default()
    };
    restore_database(bins, &target.admin, env.store(), &options).await
}
