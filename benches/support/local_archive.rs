//! The WAL archive copied to local disk, for `cp` as `restore_command` next
//! to `drillbook wal-fetch` (shared by the recovery and wal_replay benches).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use drillbook::wal::WalArchive;

/// Fetches (and checks) every file `names` of `archive` into `scratch/archive`,
/// readable by the server's account, and returns that directory.
pub(crate) async fn copy_archive_locally(archive: &WalArchive, names: &[String], scratch: &Path) -> PathBuf {
    let local = scratch.join("archive");
    std::fs::create_dir(&local).expect("dir");
    for name in names {
        archive
            .fetch(name, &local.join(name))
            .await
            .expect("copy archive locally");
        std::fs::set_permissions(local.join(name), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    for dir in [scratch, local.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    local
}
