//! The fixture against a real PostgreSQL: the database's audit hash and
//! drillbook's agree row for row, and the generated ledger loads.

use drillbook::fixtures::{self, FixtureSpec, Profile, audit_hash::AuditFields};
use drillbook::pg::{Cluster, ClusterOptions, PgBinaries};
use futures::TryStreamExt;
use sqlx::{Connection, PgConnection, Row};

#[tokio::test]
async fn database_and_rust_compute_the_same_audit_hash() {
    let bins = PgBinaries::discover().unwrap();
    let cluster = Cluster::start(&bins, ClusterOptions::default()).await.unwrap();
    let target = cluster.create_database("immoflowme").await.unwrap();
    let spec = FixtureSpec {
        profile: Profile::Small,
        seed: 42,
        until: "2026-11-28T12:00:00Z".parse().unwrap(),
    };
    let summary = fixtures::seed(&target, spec).await.unwrap();
    assert_eq!(summary.rows_in("audit_logs"), Some(Profile::Small.audit_rows() as u64));

    let mut conn = PgConnection::connect_with(&target.connect_options()).await.unwrap();
    // Application-style inserts: the trigger links them to the head itself,
    // including awkward content (separators, quotes, unicode, NULL tenant).
    sqlx::raw_sql(
        "INSERT INTO audit_logs (tenant_id, actor, action, entity_type, entity_id, payload) VALUES
           (NULL, 'ops|root', 'drill:started', 'x', '1:2', '{\"note\":\"größe\\t|\"}'),
           (7, '', '', '', '', '')",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let mut rows = sqlx::query(
        "SELECT id, created_at, tenant_id, actor, action, entity_type, entity_id, payload, previous_hash, hash
         FROM audit_logs ORDER BY created_at, id",
    )
    .fetch(&mut conn);
    let (mut checked, mut previous) = (0, "GENESIS".to_owned());
    while let Some(row) = rows.try_next().await.unwrap() {
        let fields = AuditFields {
            previous_hash: row.get("previous_hash"),
            id: row.get("id"),
            created_at: row.get("created_at"),
            tenant_id: row.get("tenant_id"),
            actor: row.get("actor"),
            action: row.get("action"),
            entity_type: row.get("entity_type"),
            entity_id: row.get("entity_id"),
            payload: row.get("payload"),
        };
        let stored: String = row.get("hash");
        assert_eq!(fields.hash(), stored, "row {}", fields.id);
        assert_eq!(
            fields.previous_hash, previous,
            "row {} links to the row before it",
            fields.id
        );
        previous = stored;
        checked += 1;
    }
    drop(rows);
    assert_eq!(checked, Profile::Small.audit_rows() + 2);
    conn.close().await.unwrap();
    cluster.cleanup().await.unwrap();
}
