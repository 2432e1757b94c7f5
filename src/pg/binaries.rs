//! Finding the PostgreSQL server binaries installed on this machine.
//!
//! Search order, first hit wins: `PG_BIN`, `pg_config --bindir`, `PATH`, then
//! `/usr/lib/postgresql/<version>/bin` (newest version first, Debian's layout).
//! A directory counts only if it holds both `initdb` and `postgres`.

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

const SERVER_PROGRAMS: [&str; 2] = ["initdb", "postgres"];

impl PgBinaries {
    /// Finds the binaries the way the module docs describe.
    pub fn discover() -> Result<Self> {
        Self::discover_in(&SearchPath::from_process())
    }

    /// # Errors
    /// [`PgError::BinariesNotFound`] listing every place searched, or
    /// [`PgError::BadPgBin`] when `PG_BIN` names a directory without the server.
    pub fn discover_in(search: &SearchPath) -> Result<Self> {
        if let Some(dir) = &search.pg_bin {
            if !has_server(dir) {
                return Err(PgError::BadPgBin { dir: dir.clone() });
            }
            return Self::at(dir);
        }

        let mut searched = Vec::new();
        let path_dirs: Vec<PathBuf> = search
            .path
            .as_ref()
            .map(|p| std::env::split_paths(p).collect())
            .unwrap_or_default();

        if let Some(pg_config) = path_dirs.iter().map(|d| d.join("pg_config")).find(|p| p.is_file()) {
            searched.push(format!("`{} --bindir`", pg_config.display()));
            if let Some(dir) = pg_config_bindir(&pg_config).filter(|d| has_server(d)) {
                return Self::at(&dir);
            }
        } else {
            searched.push("pg_config on PATH (not found)".to_owned());
        }

        searched.push("PATH".to_owned());
        if let Some(dir) = path_dirs.iter().find(|d| has_server(d)) {
            return Self::at(dir);
        }

        for root in &search.install_roots {
            searched.push(format!("{}/*/bin", root.display()));
            if let Some(dir) = newest_versioned_bin(root) {
                return Self::at(&dir);
            }
        }
        Err(PgError::BinariesNotFound { searched })
    }

    /// Uses the binaries in `dir` as they are.
    pub fn at(dir: &Path) -> Result<Self> {
        let postgres = dir.join("postgres");
        let output = Command::new(&postgres)
            .arg("--version")
            .output()
            .map_err(|source| PgError::Spawn {
                program: postgres.clone(),
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

fn has_server(dir: &Path) -> bool {
    SERVER_PROGRAMS.iter().all(|p| dir.join(p).is_file())
}

fn pg_config_bindir(pg_config: &Path) -> Option<PathBuf> {
    let out = Command::new(pg_config).arg("--bindir").output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn newest_versioned_bin(root: &Path) -> Option<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let key = name.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((key, bin))
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
            for program in SERVER_PROGRAMS {
                // 15 is incomplete: no postgres binary.
                if version == "15" && program == "postgres" {
                    continue;
                }
                std::fs::write(bin.join(program), "").unwrap();
            }
        }
        assert_eq!(newest_versioned_bin(root.path()), Some(root.path().join("13/bin")));
    }

    #[test]
    fn the_machine_has_a_server() {
        let found = PgBinaries::discover().expect("PostgreSQL server binaries are a prerequisite");
        assert!(found.major_version() >= 13, "{found:?}");
        assert!(found.program("pg_dump").is_file());
    }
}
