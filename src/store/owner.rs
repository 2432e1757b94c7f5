//! Which process is writing a multi-object write (a backup, a base backup),
//! recorded in the bucket itself so that a later process can tell a dead
//! write's leftovers from a running one's.
//!
//! The marker holds this machine's boot, the pid and its start time
//! (`scratch::machine_owner_label`). It is written before
//! anything else of the write and removed after everything else, so a
//! write's objects without a marker (and not published) are leftovers of an
//! interrupted sweep.

use super::{Result, Store, StoreError};

/// What a marker says about its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Known to be gone (this boot of this machine, process not running),
    /// or this very process when asked to count itself as stopped.
    Gone,
    /// Running, or on another machine or an earlier boot: only its own
    /// process can tell it is dead, so its objects are left alone.
    Unknown,
    /// No marker.
    None,
}

/// Records this process as the writer, at `key`.
pub async fn mark(store: &Store, key: &str) -> Result<()> {
    let label = crate::scratch::machine_owner_label().unwrap_or_else(|| "unknown".into());
    store.put_bytes(key, label.into_bytes(), "text/plain").await
}

/// Reads the marker at `key`. `this_process_stopped` counts this process's
/// own marker as gone: a write interrupted by a signal, its work dropped.
pub async fn writer(store: &Store, key: &str, this_process_stopped: bool) -> Result<Writer> {
    let label = match store.get_bytes(key).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(StoreError::NotFound { .. }) => return Ok(Writer::None),
        Err(e) => return Err(e),
    };
    let me = crate::scratch::machine_owner_label();
    let gone = crate::scratch::machine_owner_is_gone(&label) || (this_process_stopped && me.as_deref() == Some(&label));
    Ok(if gone { Writer::Gone } else { Writer::Unknown })
}
