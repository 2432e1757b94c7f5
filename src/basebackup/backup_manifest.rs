//! PostgreSQL's `backup_manifest`, which `pg_basebackup` puts last in the
//! base tar: every file of the backup with its size and checksum, the WAL
//! range the backup needs, and a SHA-256 of the manifest itself.
//!
//! [`check`] does what `pg_verifybackup` does with it, against the sizes and
//! checksums taken while the files were written (no second read): the
//! manifest's own checksum, every listed file present with its size and
//! checksum, no file present that is not listed (outside what
//! `pg_verifybackup` ignores too). The WAL range is returned for
//! `pg_waldump` to parse, as `pg_verifybackup` does.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// Files `pg_verifybackup` does not expect in the manifest: the manifest,
/// the WAL (checked by parsing it) and files tools add to a copy.
const NOT_LISTED: [&str; 5] = [
    "backup_manifest",
    "pg_wal",
    "postgresql.auto.conf",
    "recovery.signal",
    "standby.signal",
];

/// Whether a file of the backup may be absent from `backup_manifest`.
pub(super) fn unlisted_allowed(path: &Path) -> bool {
    path.components()
        .next()
        .is_some_and(|first| NOT_LISTED.iter().any(|name| first.as_os_str() == *name))
}

/// A per-file checksum algorithm of `backup_manifest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    None,
    Crc32c,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl ChecksumAlgorithm {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "NONE" => Self::None,
            "CRC32C" => Self::Crc32c,
            "SHA224" => Self::Sha224,
            "SHA256" => Self::Sha256,
            "SHA384" => Self::Sha384,
            "SHA512" => Self::Sha512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Crc32c => "CRC32C",
            Self::Sha224 => "SHA224",
            Self::Sha256 => "SHA256",
            Self::Sha384 => "SHA384",
            Self::Sha512 => "SHA512",
        }
    }

    pub(super) fn hasher(self) -> FileHasher {
        match self {
            Self::None => FileHasher::None,
            Self::Crc32c => FileHasher::Crc32c(0),
            Self::Sha224 => FileHasher::Sha224(Sha224::new()),
            Self::Sha256 => FileHasher::Sha256(Sha256::new()),
            Self::Sha384 => FileHasher::Sha384(Sha384::new()),
            Self::Sha512 => FileHasher::Sha512(Sha512::new()),
        }
    }
}

/// A checksum being computed, finished as `backup_manifest` writes it.
pub(super) enum FileHasher {
    None,
    Crc32c(u32),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl FileHasher {
    pub(super) fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::None => {}
            Self::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, bytes),
            Self::Sha224(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
            Self::Sha384(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// Lowercase hex. PostgreSQL writes a CRC32C as the bytes of the
    /// `uint32` in memory, which is little-endian on every platform it
    /// builds backups on here.
    pub(super) fn finish(self) -> String {
        match self {
            Self::None => String::new(),
            Self::Crc32c(crc) => hex::encode(crc.to_le_bytes()),
            Self::Sha224(h) => hex::encode(h.finalize()),
            Self::Sha256(h) => hex::encode(h.finalize()),
            Self::Sha384(h) => hex::encode(h.finalize()),
            Self::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// A file as it was written out of the tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WrittenFile {
    pub(super) size: u64,
    /// In the algorithm the extraction was told to compute.
    pub(super) checksum: String,
}

/// The WAL a backup needs to be consistent: `pg_waldump` parses it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(super) struct WalRange {
    #[serde(rename = "Timeline")]
    pub(super) timeline: u32,
    #[serde(rename = "Start-LSN")]
    pub(super) start_lsn: String,
    #[serde(rename = "End-LSN")]
    pub(super) end_lsn: String,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    version: u32,
    #[serde(rename = "Files")]
    files: Vec<ListedFile>,
    #[serde(rename = "WAL-Ranges", default)]
    wal_ranges: Vec<WalRange>,
}

#[derive(Deserialize)]
struct ListedFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    /// Hex of the name's bytes, for names that are not UTF-8.
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

impl ListedFile {
    fn path(&self) -> Result<PathBuf, String> {
        use std::os::unix::ffi::OsStringExt;
        match (&self.path, &self.encoded_path) {
            (Some(path), _) => Ok(PathBuf::from(path)),
            (None, Some(encoded)) => hex::decode(encoded)
                .map(|bytes| PathBuf::from(std::ffi::OsString::from_vec(bytes)))
                .map_err(|e| format!("backup_manifest has a bad Encoded-Path {encoded:?}: {e}")),
            (None, None) => Err("backup_manifest lists a file without a path".into()),
        }
    }
}

/// At most this many problems are named; the rest are counted.
const PROBLEMS_NAMED: usize = 5;

/// Checks the files written from a backup (`written`, paths relative to
/// `root`, checksums in `computed`) against its `backup_manifest`. A file
/// the manifest checksums in another algorithm is read again from `root`.
/// Returns the WAL ranges to parse.
///
/// # Errors
/// Every problem found, each naming its file, in one message.
pub(super) fn check(
    manifest: &[u8],
    written: &BTreeMap<PathBuf, WrittenFile>,
    computed: ChecksumAlgorithm,
    root: &Path,
) -> Result<Vec<WalRange>, String> {
    verify_own_checksum(manifest)?;
    let parsed: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("backup_manifest is not a manifest PostgreSQL wrote: {e}"))?;
    if !(1..=2).contains(&parsed.version) {
        return Err(format!(
            "backup_manifest has version {}, which drillbook does not know",
            parsed.version
        ));
    }
    let mut problems = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    for file in &parsed.files {
        let path = file.path()?;
        match written.get(&path) {
            None => problems.push(format!(
                "{} is in backup_manifest but not in the backup",
                path.display()
            )),
            Some(seen) if seen.size != file.size => problems.push(format!(
                "{} has {} bytes, backup_manifest says {}",
                path.display(),
                seen.size,
                file.size
            )),
            Some(seen) => {
                if let Some(problem) = checksum_problem(file, &path, seen, computed, root) {
                    problems.push(problem);
                }
            }
        }
        listed.insert(path);
    }
    for path in written.keys() {
        if !listed.contains(path) && !unlisted_allowed(path) {
            problems.push(format!(
                "{} is in the backup but not in backup_manifest",
                path.display()
            ));
        }
    }
    if problems.is_empty() {
        return Ok(parsed.wal_ranges);
    }
    let more = problems.len().saturating_sub(PROBLEMS_NAMED);
    let mut message = problems.into_iter().take(PROBLEMS_NAMED).collect::<Vec<_>>().join("; ");
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    Err(message)
}

fn checksum_problem(
    file: &ListedFile,
    path: &Path,
    seen: &WrittenFile,
    computed: ChecksumAlgorithm,
    root: &Path,
) -> Option<String> {
    let name = file.algorithm.as_deref().unwrap_or("NONE");
    let Some(algorithm) = ChecksumAlgorithm::parse(name) else {
        return Some(format!(
            "{} has checksum algorithm {name:?}, which drillbook does not know",
            path.display()
        ));
    };
    if algorithm == ChecksumAlgorithm::None {
        return None;
    }
    let expected = file.checksum.as_deref().unwrap_or_default().to_ascii_lowercase();
    let actual = if algorithm == computed {
        seen.checksum.clone()
    } else {
        match checksum_of_file(&root.join(path), algorithm) {
            Ok(sum) => sum,
            Err(e) => {
                return Some(format!(
                    "{}: failed to read it again for its {name}: {e}",
                    path.display()
                ));
            }
        }
    };
    (actual != expected).then(|| {
        format!(
            "{} has {name} {actual}, backup_manifest says {expected}",
            path.display()
        )
    })
}

fn checksum_of_file(path: &Path, algorithm: ChecksumAlgorithm) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// The manifest's last line holds the SHA-256 of everything before it (up
/// to and with the newline that ends the line before).
fn verify_own_checksum(manifest: &[u8]) -> Result<(), String> {
    let newlines: Vec<usize> = manifest
        .iter()
        .enumerate()
        .filter_map(|(i, b)| (*b == b'\n').then_some(i))
        .collect();
    let [.., penultimate, last] = newlines[..] else {
        return Err("backup_manifest is cut short (fewer than two lines)".into());
    };
    let line = String::from_utf8_lossy(&manifest[penultimate + 1..last]);
    let expected = line
        .trim()
        .strip_prefix("\"Manifest-Checksum\":")
        .map(|rest| {
            rest.trim()
                .trim_end_matches('}')
                .trim()
                .trim_matches('"')
                .to_ascii_lowercase()
        })
        .ok_or_else(|| "backup_manifest does not end with its Manifest-Checksum line".to_owned())?;
    let actual = hex::encode(Sha256::digest(&manifest[..=penultimate]));
    if actual != expected {
        return Err(format!(
            "backup_manifest's own SHA256 is {actual}, its Manifest-Checksum says {expected}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &str) -> Vec<u8> {
        let body = format!(
            "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{files}\n],\n\
             \"WAL-Ranges\": [\n{{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }}\n],\n"
        );
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes()
    }

    fn crc_of(bytes: &[u8]) -> String {
        let mut hasher = ChecksumAlgorithm::Crc32c.hasher();
        hasher.update(bytes);
        hasher.finish()
    }

    #[test]
    fn crc32c_is_written_as_postgresql_does() {
        // CRC-32C("123456789") = 0xE3069283, stored little-endian.
        assert_eq!(crc_of(b"123456789"), "839206e3");
    }

    #[test]
    fn a_matching_backup_passes_and_gives_its_wal_range() {
        let text = manifest(&format!(
            "{{ \"Path\": \"PG_VERSION\", \"Size\": 3, \"Last-Modified\": \"2026-01-01 00:00:00 GMT\", \
             \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
            crc_of(b"15\n")
        ));
        let written = BTreeMap::from([
            (
                PathBuf::from("PG_VERSION"),
                WrittenFile {
                    size: 3,
                    checksum: crc_of(b"15\n"),
                },
            ),
            (
                PathBuf::from("pg_wal/000000010000000000000002"),
                WrittenFile {
                    size: 16,
                    checksum: String::new(),
                },
            ),
            (
                PathBuf::from("backup_manifest"),
                WrittenFile {
                    size: 1,
                    checksum: String::new(),
                },
            ),
        ]);
        let ranges = check(&text, &written, ChecksumAlgorithm::Crc32c, Path::new("/nonexistent")).unwrap();
        assert_eq!(ranges[0].start_lsn, "0/2000028");
    }

    #[test]
    fn every_problem_names_its_file() {
        let text = manifest(
            "{ \"Path\": \"PG_VERSION\", \"Size\": 3, \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" },\n\
             { \"Path\": \"global/pg_control\", \"Size\": 8192 }",
        );
        let written = BTreeMap::from([
            (
                PathBuf::from("PG_VERSION"),
                WrittenFile {
                    size: 3,
                    checksum: crc_of(b"15\n"),
                },
            ),
            (
                PathBuf::from("base/1/extra"),
                WrittenFile {
                    size: 1,
                    checksum: String::new(),
                },
            ),
        ]);
        let err = check(&text, &written, ChecksumAlgorithm::Crc32c, Path::new("/nonexistent")).unwrap_err();
        assert!(err.contains("PG_VERSION has CRC32C"), "{err}");
        assert!(
            err.contains("global/pg_control is in backup_manifest but not in the backup"),
            "{err}"
        );
        assert!(
            err.contains("base/1/extra is in the backup but not in backup_manifest"),
            "{err}"
        );
    }

    #[test]
    fn a_changed_manifest_fails_its_own_checksum() {
        let mut text = manifest("{ \"Path\": \"PG_VERSION\", \"Size\": 3 }");
        let at = text.iter().position(|b| *b == b'3').unwrap();
        text[at] = b'4';
        let err = check(&text, &BTreeMap::new(), ChecksumAlgorithm::Crc32c, Path::new("/")).unwrap_err();
        assert!(err.contains("own SHA256"), "{err}");
    }
}
