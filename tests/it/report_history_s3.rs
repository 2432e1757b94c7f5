//! Drill history in S3 (`HistoryStore::S3`) against the embedded S3 server:
//! one object per record under `drills/history/<YYYY-MM>/`, read back by
//! month; unreadable objects are skipped with a warning naming them, and
//! records of the pre-versioned format still read.

use chrono::{DateTime, Utc};
use drillbook::env::EmbeddedEnvironment;
use drillbook::report::history::{FORMAT_VERSION, HistoryRecord, HistoryStore, RecordV0, S3_PREFIX};
use drillbook::report::month::Month;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn record(drill: &str, started_at: &str, passed: bool) -> HistoryRecord {
    let mut record = RecordV0 {
        drill: drill.to_owned(),
        scenario: "single-pod-crash".to_owned(),
        started_at: at(started_at),
        rto_secs: Some(42.5),
        rto_target_secs: 300.0,
        rpo_secs: None,
        rpo_target_secs: None,
        passed,
        failures: if passed {
            Vec::new()
        } else {
            vec!["check `smoke` failed: HTTP 503".to_owned()]
        },
    }
    .upgrade();
    record.backend = "embedded".to_owned();
    record.duration_seconds = 61.25;
    record
        .properties
        .insert("dataset_profile".to_owned(), "small".to_owned());
    record
}

#[tokio::test]
async fn history_in_s3_appends_one_object_per_record_and_reads_by_month() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    let store = env.store().clone();
    let history = HistoryStore::S3(store.clone());
    let may: Month = "2026-05".parse().unwrap();
    assert!(history.location().ends_with(S3_PREFIX), "{}", history.location());

    let first = record("pod_crash", "2026-05-03T10:00:00.250Z", true);
    let second = record("pod_crash", "2026-05-20T09:30:00Z", false);
    let april = record("pod_crash", "2026-04-30T23:59:59Z", true);
    // Appended out of order: reading sorts by start.
    history.append(&second).await.unwrap();
    history.append(&first).await.unwrap();
    history.append(&april).await.unwrap();

    let mut keys: Vec<String> = store
        .list(&format!("{S3_PREFIX}{may}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    // `<stamp>_<drill>_<12 hex digits>.json`: the suffix keeps same-millisecond records apart.
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (key, start) in keys.iter().zip([
        "drills/history/2026-05/20260503T100000.250Z_pod_crash_",
        "drills/history/2026-05/20260520T093000.000Z_pod_crash_",
    ]) {
        let suffix = key.strip_prefix(start).and_then(|rest| rest.strip_suffix(".json"));
        assert!(
            suffix.is_some_and(|s| s.len() == 12 && s.chars().all(|c| c.is_ascii_hexdigit())),
            "{key} is not {start}<12 hex digits>.json"
        );
    }

    let read = history.read(&[may]).await.unwrap();
    assert!(read.warnings.is_empty(), "{:?}", read.warnings);
    assert_eq!(
        read.records,
        [first.clone(), second.clone()],
        "both records, oldest first, unchanged"
    );
    assert_eq!(read.records[0].format, FORMAT_VERSION);

    // Two months at once; a month with nothing in it is empty, not an error.
    let read = history.read(&may.trailing(3)).await.unwrap();
    assert_eq!(read.records, [april.clone(), first.clone(), second.clone()]);
    let empty = history.read(&["2025-01".parse().unwrap()]).await.unwrap();
    assert!(empty.records.is_empty() && empty.warnings.is_empty(), "{empty:?}");

    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn unreadable_objects_are_skipped_with_a_warning_and_old_formats_read() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    let store = env.store().clone();
    let history = HistoryStore::S3(store.clone());
    let may: Month = "2026-05".parse().unwrap();

    let good = record("pod_crash", "2026-05-03T10:00:00Z", true);
    history.append(&good).await.unwrap();

    let corrupt = format!("{S3_PREFIX}{may}/20260504T000000.000Z_corrupt.json");
    store
        .put_bytes(
            &corrupt,
            b"{\"format\": 1, \"drill\": \"trunc".to_vec(),
            "application/json",
        )
        .await
        .unwrap();
    let binary = format!("{S3_PREFIX}{may}/20260504T000001.000Z_binary.json");
    store
        .put_bytes(&binary, vec![0xff, 0xfe, 0x00], "application/json")
        .await
        .unwrap();
    let future = format!("{S3_PREFIX}{may}/20260504T000002.000Z_future.json");
    store
        .put_bytes(
            &future,
            br#"{"format": 7, "drill": "from_the_future"}"#.to_vec(),
            "application/json",
        )
        .await
        .unwrap();
    // The pre-versioned shape: no `format`, `*_secs` durations.
    let old = format!("{S3_PREFIX}{may}/20260502T080000.000Z_old_restore.json");
    let old_json = r#"{
        "drill": "old_restore",
        "scenario": "complete-infrastructure-loss",
        "started_at": "2026-05-02T08:00:00Z",
        "rto_secs": 1800.0,
        "rto_target_secs": 14400.0,
        "rpo_secs": 600.0,
        "rpo_target_secs": 86400.0,
        "passed": true
    }"#;
    store
        .put_bytes(&old, old_json.as_bytes().to_vec(), "application/json")
        .await
        .unwrap();

    let read = history.read(&[may]).await.unwrap();
    let drills: Vec<&str> = read.records.iter().map(|r| r.drill.as_str()).collect();
    assert_eq!(
        drills,
        ["old_restore", "pod_crash"],
        "the readable records, oldest first"
    );
    assert_eq!(read.records[1], good);

    let upgraded = &read.records[0];
    assert_eq!(upgraded.format, FORMAT_VERSION);
    assert_eq!(upgraded.rto_seconds, Some(1800.0));
    assert_eq!(upgraded.rto_target_seconds, 14_400.0);
    assert_eq!(upgraded.rpo_seconds, Some(600.0));
    assert_eq!(upgraded.rpo_target_seconds, Some(86_400.0));
    assert_eq!(upgraded.action, "Full restore from backup");
    assert_eq!(upgraded.backend, "unknown");
    assert!(upgraded.passed && !upgraded.rto_missed() && !upgraded.rpo_missed());

    assert_eq!(read.warnings.len(), 3, "{:#?}", read.warnings);
    for (key, problem) in [
        (&corrupt, "not JSON"),
        (&binary, "utf-8"),
        (&future, "upgrade drillbook"),
    ] {
        let warning = read
            .warnings
            .iter()
            .find(|w| w.contains(key.as_str()))
            .unwrap_or_else(|| panic!("no warning names {key}: {:#?}", read.warnings));
        assert!(
            warning.starts_with("skipped history object `s3://")
                && warning.to_lowercase().contains(&problem.to_lowercase()),
            "{warning}"
        );
    }

    env.cleanup().await.unwrap();
}
