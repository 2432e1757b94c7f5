//! The guard: a drill may destroy only what it created.
//!
//! Every destructive call an [`Environment`](super::Environment) makes on a
//! server or bucket it does not own outright (dropping a database, deleting
//! an S3 object, writing over a key) first asks the guard, which answers from
//! a ledger of what this drill created. On staging the ledger starts empty:
//! the source database, the existing backups and every other database on the
//! server are refused. Corruption has its own token, the harness's
//! `fault::Disposable`, which staging drills mint only from their own
//! restored copy (`Disposable::restored_copy`).

use std::collections::BTreeSet;

use crate::pg::ConnInfo;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    #[error(
        "refusing to {action} {target}: this drill did not create it; on the {backend} backend a drill may only \
         destroy what it created itself (its restored `<db>_restore_<stamp>` databases and scratch objects)"
    )]
    NotCreated {
        action: String,
        target: String,
        backend: &'static str,
    },
}

/// What this drill created, and may therefore destroy.
#[derive(Debug, Default)]
pub struct Guard {
    backend: &'static str,
    /// `(host, port, database)`.
    databases: BTreeSet<(String, u16, String)>,
    /// S3 keys relative to the store's prefix.
    objects: BTreeSet<String>,
}

impl Guard {
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            ..Self::default()
        }
    }

    fn key(target: &ConnInfo) -> (String, u16, String) {
        (target.host.clone(), target.port, target.database.clone())
    }

    /// Records a database the drill created (before or right after creating it).
    pub fn created_database(&mut self, target: &ConnInfo) {
        self.databases.insert(Self::key(target));
    }

    /// Records an S3 key (relative to the store's prefix) the drill wrote.
    pub fn created_object(&mut self, key: &str) {
        self.objects.insert(key.to_owned());
    }

    /// Forgets a database once it is gone.
    pub fn forget_database(&mut self, target: &ConnInfo) {
        self.databases.remove(&Self::key(target));
    }

    pub fn owns_database(&self, target: &ConnInfo) -> bool {
        self.databases.contains(&Self::key(target))
    }

    pub fn owns_object(&self, key: &str) -> bool {
        self.objects.contains(key)
    }

    /// The databases this drill created, for cleanup.
    pub fn databases(&self) -> impl Iterator<Item = (&str, u16, &str)> {
        self.databases.iter().map(|(h, p, d)| (h.as_str(), *p, d.as_str()))
    }

    /// The scratch objects this drill wrote, for cleanup.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.objects.iter().map(String::as_str)
    }

    /// # Errors
    /// [`GuardError::NotCreated`] unless the drill created `target`.
    pub fn allow_database(&self, action: &str, target: &ConnInfo) -> Result<(), GuardError> {
        if self.owns_database(target) {
            Ok(())
        } else {
            Err(GuardError::NotCreated {
                action: action.to_owned(),
                target: format!("database {target}"),
                backend: self.backend,
            })
        }
    }

    /// # Errors
    /// [`GuardError::NotCreated`] unless the drill wrote `key`.
    pub fn allow_object(&self, action: &str, location: &str, key: &str) -> Result<(), GuardError> {
        if self.owns_object(key) {
            Ok(())
        } else {
            Err(GuardError::NotCreated {
                action: action.to_owned(),
                target: format!("{location}{key}"),
                backend: self.backend,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_recorded_is_allowed() {
        let mut guard = Guard::new("staging");
        let source: ConnInfo = "postgres://admin:pw@db:5432/immoflowme".parse().unwrap();
        let copy = source.with_database("immoflowme_restore_20261129000000000");
        guard.created_database(&copy);
        assert!(guard.allow_database("drop", &copy).is_ok());
        let err = guard.allow_database("drop", &source).unwrap_err().to_string();
        assert!(
            err.contains("refusing to drop database postgres://admin:***@db:5432/immoflowme"),
            "{err}"
        );
        assert!(!err.contains("pw@"), "{err}");
        // Same name on another server is another database.
        assert!(
            guard
                .allow_database(
                    "drop",
                    &ConnInfo {
                        port: 5433,
                        ..copy.clone()
                    }
                )
                .is_err()
        );
        guard.created_object("drills/scratch/x");
        assert!(guard.allow_object("delete", "s3://b/", "drills/scratch/x").is_ok());
        assert!(
            guard
                .allow_object("delete", "s3://b/", "daily/20261128T000000.000Z/immoflowme.dump")
                .is_err()
        );
    }
}
