//! SIGINT and SIGTERM for the commands that write (backup, restore): the
//! work is dropped, which kills its child programs and removes its temp
//! dirs, the caller removes what it made elsewhere (a database, S3
//! objects), and the process exits 130 / 143 as shells expect (128 + the
//! signal's number).

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The signals, caught from the moment this is made (before any work
/// starts: an early signal must not kill the process past its cleanup).
pub(crate) struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
}

/// A signal that stopped the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interrupted {
    pub name: &'static str,
    /// The conventional exit code: 128 + the signal's number.
    pub exit_code: u8,
}

impl Interrupts {
    pub(super) fn catch() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Runs `work` to its end, or until a signal arrives; then `work` is dropped.
    pub(super) async fn run<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Interrupted> {
        tokio::select! {
            done = work => Ok(done),
            _ = self.interrupt.recv() => Err(Interrupted { name: "SIGINT", exit_code: 128 + libc::SIGINT as u8 }),
            _ = self.terminate.recv() => Err(Interrupted { name: "SIGTERM", exit_code: 128 + libc::SIGTERM as u8 }),
        }
    }
}
