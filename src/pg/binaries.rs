//! Finding the PostgreSQL binaries installed on this machine.
//!
//! Search order, first hit wins: `PG_BIN`, `pg_config --bindir`, `PATH`, then
//! `/usr/lib/postgresql/<version>/bin` (newest version first, Debian's layout).
//! A directory counts only if it holds what the caller [`Needs`]: the server
//! (`initdb`, `postgres`) for backends that run servers here, or only the
//! client tools (`pg_dump`, `pg_restore`) for backends whose servers run
//! elsewhere (containers, staging).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{PgError, Result};

/// The server and client programs of one PostgreSQL installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bin_dir: PathBuf,
    major_version: u32,
    version: String,
}

/// Where [`PgBinaries::discover_in`] looks; [`SearchPath::from_process`] reads
/// the real environment, tests build their own.
#[derive(Debug, Clone, Default)]
pub struct SearchPath {
    /// Value of `PG_BIN`: when set it must be right, nothing else is tried.
    pub pg_bin: Option<PathBuf>,
    /// Value of `PATH`, searched for `pg_config` and then for `initdb`.
    pub path: Option<OsString>,
    /// Directories whose `*/bin` children are tried last.
    pub install_roots: Vec<PathBuf>,
}

impl SearchPath {
    pub fn from_process() -> Self {
        Self {
            pg_bin: std::env::var_os("PG_BIN").map(PathBuf::from),
            path: std::env::var_os("PATH"),
            install_roots: vec![PathBuf::from("/usr/lib/postgresql")],
        }
    }
}

/// What a caller needs from an installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// `initdb` and `postgres`: servers run on this machine.
    Server,
    /// `pg_dump` and `pg_restore` only: the servers run elsewhere.
    ClientTools,
}

impl Needs {
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Self::Server => &["initdb", "postgres"],
            Self::ClientTools => &["pg_dump", "pg_restore"],
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            Self::Server => "server binaries",
            Self::ClientTools => "client tools",
        }
    }

    /// The Debian/Ubuntu package that provides them.
    pub fn package(self) -> &'static str {
        match self {
            Self::Server => "postgresql",
            Self::ClientTools => "postgresql-client",
        }
    }

    fn found_in(self, dir: &Path) -> bool {
        self.programs().iter().all(|p| dir.join(p).is_file())
    }
}

impl PgBinaries {
    /// Finds the server binaries the way the module docs describe.
    pub fn discover() -> Result<Self> {
        Self::discover_in(&SearchPath::from_process())
    }

    /// Finds the client tools (`pg_dump`, `pg_restore`): enough for a backend
    /// whose servers run elsewhere.
    pub fn discover_client() -> Result<Self> {
        Self::discover_for(&SearchPath::from_process(), Needs::ClientTools)
    }

    /// The server binaries in `search`.
    ///
    /// # Errors
    /// As [`Self::discover_for`].
    pub fn discover_in(search: &SearchPath) -> Result<Self> {
        Self::discover_for(search, Needs::Server)
    }

    /// # Errors
    /// [`PgError::BinariesNotFound`] listing every place searched, or
    /// [`PgError::BadPgBin`] when `PG_BIN` names a directory without them.
    pub fn discover_for(search: &SearchPath, needs: Needs) -> Result<Self> {
        if let Some(dir) = &search.pg_bin {
            if !needs.found_in(dir) {
                return Err(PgError::BadPgBin {
                    needs,
                    dir: dir.clone(),
                });
            }
            return Self::at_for(dir, needs);
        }

        let mut searched = Vec::new();
        let path_dirs: Vec<PathBuf> = search
            .path
            .as_ref()
            .map(|p| std::env::split_paths(p).collect())
            .unwrap_or_default();

        if let Some(pg_config) = path_dirs.iter().map(|d| d.join("pg_config")).find(|p| p.is_file()) {
            searched.push(format!("`{} --bindir`", pg_config.display()));
            if let Some(dir) = pg_config_bindir(&pg_config).filter(|d| needs.found_in(d)) {
                return Self::at_for(&dir, needs);
            }
        } else {
            searched.push("pg_config on PATH (not found)".to_owned());
        }

        searched.push("PATH".to_owned());
        if let Some(dir) = path_dirs.iter().find(|d| needs.found_in(d)) {
            return Self::at_for(dir, needs);
        }

        for root in &search.install_roots {
            searched.push(format!("{}/*/bin", root.display()));
            if let Some(dir) = newest_versioned_bin(root, needs) {
                return Self::at_for(&dir, needs);
            }
        }
        Err(PgError::BinariesNotFound { needs, searched })
    }

    /// Uses the server binaries in `dir` as they are.
    pub fn at(dir: &Path) -> Result<Self> {
        Self::at_for(dir, Needs::Server)
    }

    fn at_for(dir: &Path, needs: Needs) -> Result<Self> {
        // The version of what will run: the server, or pg_dump.
        let program = dir.join(if needs == Needs::Server { "postgres" } else { "pg_dump" });
        let output = Command::new(&program)
            .arg("--version")
            .output()
            .map_err(|source| PgError::Spawn {
                program: program.clone(),
                source,
            })?;
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let version = text
            .split_whitespace()
            .nth(2)
            .ok_or_else(|| PgError::UnknownVersion { output: text.clone() })?
            .to_owned();
        let major_version = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| PgError::UnknownVersion { output: text.clone() })?;
        Ok(Self {
            bin_dir: dir.to_path_buf(),
            major_version,
            version,
        })
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Path of one program of this installation (`pg_dump`, `pg_restore`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    pub fn major_version(&self) -> u32 {
        self.major_version
    }

    /// Full version as `postgres --version` prints it, e.g. `15.18`.
    pub fn version(&self) -> &str {
        &self.version
    }
}

fn pg_config_bindir(pg_config: &Path) -> Option<PathBuf> {
    let out = Command::new(pg_config).arg("--bindir").output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn newest_versioned_bin(root: &Path, needs: Needs) -> Option<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let key = name.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            needs.found_in(&bin).then_some((key, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_installed_is_one_clear_error_that_names_the_fix() {
        let empty = tempfile::tempdir().unwrap();
        let search = SearchPath {
            pg_bin: None,
            path: Some(empty.path().as_os_str().to_owned()),
            install_roots: vec![empty.path().join("postgresql")],
        };
        let err = PgBinaries::discover_in(&search).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, PgError::BinariesNotFound { .. }), "{message}");
        assert!(message.contains("PG_BIN"), "{message}");
        assert!(message.contains("apt-get install postgresql"), "{message}");
    }

    #[test]
    fn a_wrong_pg_bin_is_not_silently_ignored() {
        let empty = tempfile::tempdir().unwrap();
        let search = SearchPath {
            pg_bin: Some(empty.path().to_owned()),
            ..SearchPath::from_process()
        };
        let err = PgBinaries::discover_in(&search).unwrap_err();
        assert!(matches!(err, PgError::BadPgBin { .. }), "{err}");
        assert!(err.to_string().contains(&empty.path().display().to_string()));
    }

    #[test]
    fn versioned_install_roots_pick_the_newest_complete_one() {
        let root = tempfile::tempdir().unwrap();
        for version in ["9.6", "13", "15"] {
            let bin = root.path().join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            for &program in Needs::Server.programs() {
                // 15 is incomplete: no postgres binary.
                if version == "15" && program == "postgres" {
                    continue;
                }
                std::fs::write(bin.join(program), "").unwrap();
            }
        }
        assert_eq!(
            newest_versioned_bin(root.path(), Needs::Server),
            Some(root.path().join("13/bin"))
        );
    }

    #[test]
    fn client_tools_alone_satisfy_remote_backends_but_not_the_server() {
        let dir = tempfile::tempdir().unwrap();
        for program in ["pg_dump", "pg_restore"] {
            std::fs::write(dir.path().join(program), "").unwrap();
        }
        let search = SearchPath {
            pg_bin: Some(dir.path().to_owned()),
            ..SearchPath::default()
        };
        let err = PgBinaries::discover_in(&search).unwrap_err();
        assert!(err.to_string().contains("initdb and postgres"), "{err}");
        // Found (the empty files then fail to report a version, which proves
        // the client search accepted the directory and ran pg_dump).
        let err = PgBinaries::discover_for(&search, Needs::ClientTools).unwrap_err();
        assert!(matches!(err, PgError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("pg_dump"), "{err}");
        let client = PgBinaries::discover_client().expect("the machine has pg_dump");
        assert!(client.program("pg_restore").is_file());
    }

    #[test]
    fn the_machine_has_a_server() {
        let found = PgBinaries::discover().expect("PostgreSQL server binaries are a prerequisite");
        assert!(found.major_version() >= 13, "{found:?}");
        assert!(found.program("pg_dump").is_file());
    }
}
