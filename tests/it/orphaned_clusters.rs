//! A test process killed outright (nextest's timeout: SIGTERM, then
//! SIGKILL) runs no `Drop`: its postgres keeps running and its temp dir
//! stays. The next process reaps them before its first cluster. Here a
//! child process (this test binary, re-run) starts a cluster and an
//! embedded S3 server and is SIGKILLed; the orphaned server must then be
//! stopped and both dirs removed, while a cluster of a living process is
//! left alone.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drillbook::pg::{Cluster, ClusterOptions, PgBinaries};

const CHILD: &str = "DRILLBOOK_ORPHAN_CHILD";

fn postmaster_pid(data_dir: &std::path::Path) -> i32 {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn running(pid: i32) -> bool {
    // A zombie is not running: it is only waiting for its parent to reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn a_killed_test_process_leaves_no_server_and_no_dir_behind() {
    let bins = PgBinaries::discover().unwrap();
    if std::env::var_os(CHILD).is_some() {
        let cluster = Cluster::start(&bins, ClusterOptions::default()).await.unwrap();
        let s3 = drillbook::env::EmbeddedS3::start().unwrap();
        println!("s3 {}", s3.root().display());
        println!("{}", cluster.data_dir().display());
        // Wait to be killed.
        tokio::time::sleep(Duration::from_secs(600)).await;
        return;
    }

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &crate::common::test_name(
                module_path!(),
                "a_killed_test_process_leaves_no_server_and_no_dir_behind",
            ),
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env_remove("DRILL_KEEP")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let s3_root = lines
        .find_map(|line| line.strip_prefix("s3 ").map(PathBuf::from))
        .expect("the child printed its S3 data dir");
    let data_dir = lines
        .find(|line| line.contains("drillbook-pg-"))
        .map(PathBuf::from)
        .expect("the child printed its cluster's data dir");
    let orphan = postmaster_pid(&data_dir);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        running(orphan),
        "the killed process's postgres outlives it: the problem being solved"
    );

    // A cluster of a living process (this one) must survive the reaping.
    let mine = Cluster::start(&bins, ClusterOptions::default()).await.unwrap();
    let reaped = drillbook::scratch::reap_orphaned_dirs();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(orphan) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!running(orphan), "the orphaned postgres {orphan} was stopped");
    let root = data_dir.parent().unwrap().to_path_buf();
    assert!(!root.exists(), "{} was removed", root.display());
    assert!(
        !s3_root.exists(),
        "the embedded S3 dir {} was removed",
        s3_root.display()
    );
    // Cluster::start already reaped it (once per process) or this call did.
    assert!(
        reaped.iter().all(|dir| *dir == root || *dir == s3_root),
        "only the orphans are reaped: {reaped:?}"
    );
    assert!(mine.data_dir().exists(), "a living process's cluster is left alone");
    mine.cleanup().await.unwrap();
}
