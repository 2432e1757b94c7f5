//! Child processes that die with drillbook.
//!
//! A `pg_restore` that outlives a killed drillbook goes on to finish a
//! database nothing verifies; a `pg_dump` goes on streaming into a pipe
//! nobody reads. So every client program drillbook runs is started with
//! `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills it when its parent dies,
//! SIGKILL of drillbook included, where no handler or `Drop` of ours runs.
//!
//! The "parent" that signal watches is the *thread* that forked, not the
//! process: a child forked from a tokio worker or blocking-pool thread is
//! killed when that thread exits (blocking threads retire after 10 s idle).
//! Children are therefore forked from one spawner thread that is started
//! once and never exits. The child also checks, after arming the signal,
//! that its parent is still this process: a parent that died between fork
//! and `prctl` would otherwise never send it.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};

type Reply = mpsc::SyncSender<io::Result<Child>>;

struct Request {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: Reply,
}

fn spawner() -> &'static mpsc::Sender<Request> {
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("drillbook-spawner".into())
            .spawn(move || {
                for mut request in requests {
                    // tokio registers the child with the caller's runtime.
                    let _runtime = request.runtime.enter();
                    let _ = request.reply.send(request.command.spawn());
                }
            })
            .expect("start the child spawner thread");
        sender
    })
}

/// Spawns `command` so that it is killed when this process dies. Must be
/// called within a tokio runtime (the child is driven by it).
pub(crate) fn spawn(mut command: Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("drillbook exited before its child started"));
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::sync_channel(1);
    let request = Request {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()
        .send(request)
        .map_err(|_| io::Error::other("the child spawner thread is gone"))?;
    // fork + exec take about a millisecond: not worth an async hand-off.
    answer
        .recv()
        .map_err(|_| io::Error::other("the child spawner thread is gone"))?
}

/// Runs `command` to completion, like [`Command::output`], spawned by [`spawn`].
pub(crate) async fn output(mut command: Command) -> io::Result<std::process::Output> {
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    spawn(command)?.wait_with_output().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_run_and_report_their_output() {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let output = output(command).await.unwrap();
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
        assert_eq!(output.status.code(), Some(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn children_arm_the_parent_death_signal() {
        // /proc/<pid>/status does not show PDEATHSIG; a child asks for it itself.
        let mut command = Command::new("/usr/bin/python3");
        command.args([
            "-c",
            "import ctypes,signal; s=ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value)",
        ]);
        let output = output(command).await.unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            libc::SIGKILL.to_string()
        );
    }
}
