//! The streaming audit-chain verifier: every chain check in one pass over
//! `audit_logs` in chain order (`ORDER BY created_at, id`), in flat memory.
//!
//! # What it checks
//!
//! - [`CheckName::ChainLinks`]: exactly the playbook's 4.1 query. Rows whose
//!   `hash` is NULL are left out of the `LAG`; a row is broken when it has a
//!   predecessor and its `previous_hash` is neither that predecessor's `hash`
//!   nor `'GENESIS'`.
//! - [`CheckName::ChainContent`]: the row's `hash` is the canonical hash
//!   ([`crate::fixtures::audit_hash`]) of its content. A NULL hash is not a
//!   content finding but a [`CheckName::ChainNullHash`] one.
//! - [`CheckName::ChainGenesis`]: `'GENESIS'` only as the first row's
//!   `previous_hash`, and the first row does link to `'GENESIS'` (otherwise the
//!   oldest rows were deleted).
//! - [`CheckName::ChainNullHash`]: rows whose `hash` is NULL (4.1 skips them).
//! - [`CheckName::ChainOrdering`]: the previous row in chain order links to
//!   this one (its `previous_hash` is this row's `hash`): the chain runs
//!   backwards here, so `ORDER BY created_at, id` (and 4.1 with it) reads
//!   two linked rows swapped, through a `created_at` tie the ids break the
//!   wrong way or a row moved in time.
//! - [`CheckName::ChainAnchor`]: with an [`Anchor`], the recorded head is still
//!   there with the same hash (its absence means the newest rows were
//!   deleted; a different hash means history was rewritten, e.g. a payload
//!   edited and the rest of the chain re-hashed), and the chain still starts
//!   at the anchor's genesis row.
//!
//! # What it does not judge
//!
//! Ids. Under concurrent writers an id comes from the identity default
//! before the audit trigger takes the chain's lock, so a transaction that
//! drew a lower id can join the chain later: ids out of chain order are
//! normal, and a check on them pages people for a healthy chain. Nor a
//! `created_at` tie as such: tied rows the ids order the way the chain links
//! them are read correctly. What such checks were meant to catch, a row
//! moved in time, is still caught: not re-hashed, by
//! [`CheckName::ChainContent`] (`created_at` is hashed); re-hashed, by the
//! link it breaks ([`CheckName::ChainLinks`], or [`CheckName::ChainGenesis`]
//! when the row after it becomes the first) or, for the head, by the anchor
//! (`tests/it/integrity_properties.rs` proves it for every row, in the model
//! and in SQL).
//!
//! Duplicate hashes ([`CheckName::ChainDuplicateHash`]) need memory
//! proportional to the table and are left to SQL (or the in-memory model).
//!
//! # Guarantees
//!
//! Memory is flat: the verifier keeps the previous row's hashes, time and id,
//! and at most [`FINDINGS_CAP`] findings per check (the rest are counted and
//! reported as one summary finding with no key).
//!
//! # Chain identity
//!
//! An anchor names its chain by the hash of the chain's first row. When the
//! first row's hash differs, the chain is still taken to be the anchor's if
//! the anchor's head row (same id and `created_at`, to the microsecond) is
//! present: then the chain was rewritten from its very first row, a
//! [`CheckName::ChainAnchor`] finding. Otherwise [`ChainVerifier::finish`]
//! fails with [`AnchorMismatch`]: comparing against another chain's anchor
//! proves nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::anchor::Anchor;
use super::{CheckName, Finding};
use crate::fixtures::audit_hash::{AuditFields, AuditHasher, GENESIS};

/// The table the chain lives in.
pub const AUDIT_TABLE: &str = "audit_logs";

/// At most this many findings are kept per check; the rest are counted.
pub const FINDINGS_CAP: usize = 1_000;

/// One `audit_logs` row, as read in chain order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub tenant_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub payload: String,
    pub previous_hash: String,
    pub hash: Option<String>,
}

impl AuditRow {
    /// The hashed content of the row, as stored.
    pub fn fields(&self) -> AuditFields<'_> {
        AuditFields {
            previous_hash: &self.previous_hash,
            id: self.id,
            created_at: self.created_at,
            tenant_id: self.tenant_id,
            actor: &self.actor,
            action: &self.action,
            entity_type: &self.entity_type,
            entity_id: &self.entity_id,
            payload: &self.payload,
        }
    }

    /// The canonical hash of the row's content.
    pub fn canonical_hash(&self) -> String {
        self.fields().hash()
    }
}

/// The anchor given to the verifier belongs to another chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "anchor belongs to another chain: the chain's first row (id {first_id}) has hash {first_hash}, the anchor \
     records genesis hash {anchor_genesis_hash} and its head row (id {anchor_head_id}) is not in this chain; \
     use the anchor recorded for this database (its backup manifest or the newest anchors/ object written by \
     `drillbook anchor` for it), or run without an anchor"
)]
#[non_exhaustive]
pub struct AnchorMismatch {
    pub first_id: i64,
    pub first_hash: String,
    pub anchor_genesis_hash: String,
    pub anchor_head_id: i64,
}

/// Findings of one check: the first [`FINDINGS_CAP`], and how many more.
#[derive(Debug, Default)]
struct Capped {
    kept: Vec<Finding>,
    dropped: u64,
}

/// The previous row in chain order (all rows).
#[derive(Debug)]
struct Previous {
    id: i64,
    created_at: DateTime<Utc>,
    previous_hash: String,
}

/// What the verifier learned about the anchor while streaming.
#[derive(Debug)]
struct AnchorState {
    anchor: Anchor,
    /// The head row's stored hash, if a row with the head's id and time was seen.
    head_seen: Option<Option<String>>,
}

/// The first row of the chain.
#[derive(Debug)]
struct First {
    id: i64,
    hash: Option<String>,
    previous_hash: String,
}

/// Verifies an audit chain row by row; see the module docs.
#[derive(Debug)]
pub struct ChainVerifier {
    rows: u64,
    /// The hash of the previous row whose hash is not NULL (4.1's `LAG`).
    last_hash: Option<String>,
    previous: Option<Previous>,
    first: Option<First>,
    anchor: Option<AnchorState>,
    findings: BTreeMap<CheckName, Capped>,
    /// Reused for every row: hashing allocates nothing.
    hasher: AuditHasher,
}

impl ChainVerifier {
    /// A verifier for one chain; with an anchor, the chain is also checked
    /// against the head recorded outside the database.
    pub fn new(anchor: Option<&Anchor>) -> Self {
        Self {
            rows: 0,
            last_hash: None,
            previous: None,
            first: None,
            anchor: anchor.map(|anchor| AnchorState {
                anchor: anchor.clone(),
                head_seen: None,
            }),
            findings: BTreeMap::new(),
            hasher: AuditHasher::new(),
        }
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn report(&mut self, check: CheckName, id: i64, detail: impl FnOnce() -> String) {
        let capped = self.findings.entry(check).or_default();
        if capped.kept.len() < FINDINGS_CAP {
            capped
                .kept
                .push(Finding::new(check, AUDIT_TABLE, Some(id.to_string()), detail()));
        } else {
            capped.dropped += 1;
        }
    }

    /// Feeds the next row. Rows must come in chain order:
    /// `ORDER BY created_at, id`.
    pub fn push(&mut self, row: &AuditRow) {
        self.rows += 1;
        let is_first = self.first.is_none();

        // 4.1 verbatim: NULL-hash rows take no part in the LAG.
        if let Some(hash) = &row.hash {
            if let Some(expected) = &self.last_hash
                && row.previous_hash != *expected
                && row.previous_hash != GENESIS
            {
                let expected = expected.clone();
                self.report(CheckName::ChainLinks, row.id, || {
                    format!(
                        "previous_hash {} does not match the previous row's hash {expected}",
                        row.previous_hash
                    )
                });
            }
            let canonical = self.hasher.hash(&row.fields());
            if hash != canonical {
                let canonical = canonical.to_owned();
                self.report(CheckName::ChainContent, row.id, || {
                    format!("stored hash {hash} is not the hash of the row's content ({canonical}): the row was edited")
                });
            }
        } else {
            self.report(CheckName::ChainNullHash, row.id, || {
                "hash is NULL: the playbook's 4.1 query skips this row".to_owned()
            });
        }

        if is_first {
            if row.previous_hash != GENESIS {
                self.report(CheckName::ChainGenesis, row.id, || {
                    format!(
                        "the chain's first row links to {} instead of GENESIS: its oldest rows were deleted",
                        row.previous_hash
                    )
                });
            }
        } else if row.previous_hash == GENESIS {
            self.report(CheckName::ChainGenesis, row.id, || {
                "previous_hash is GENESIS but the row is not the chain's first: a second chain was started \
                 (the playbook's 4.1 query does not count it)"
                    .to_owned()
            });
        }

        // The previous row links to this one: the chain ran this row first.
        if let (Some(previous), Some(hash)) = (&self.previous, &row.hash)
            && previous.previous_hash == *hash
        {
            let (prev_id, tie) = (previous.id, previous.created_at == row.created_at);
            self.report(CheckName::ChainOrdering, row.id, || {
                if tie {
                    format!(
                        "created_at ties with the previous row (id {prev_id}), which links to this row: the ids \
                         order the tie against the chain, so 4.1's ORDER BY created_at, id reads the two swapped"
                    )
                } else {
                    format!(
                        "the previous row (id {prev_id}, earlier created_at) links to this row: the chain runs \
                         backwards in time here, a row was moved in time"
                    )
                }
            });
        }

        if let Some(state) = &mut self.anchor
            && row.id == state.anchor.head_id
            && row.created_at == state.anchor.head_created_at
        {
            state.head_seen = Some(row.hash.clone());
        }

        if is_first {
            self.first = Some(First {
                id: row.id,
                hash: row.hash.clone(),
                previous_hash: row.previous_hash.clone(),
            });
        }
        match &mut self.previous {
            Some(previous) => {
                previous.id = row.id;
                previous.created_at = row.created_at;
                previous.previous_hash.clone_from(&row.previous_hash);
            }
            None => {
                self.previous = Some(Previous {
                    id: row.id,
                    created_at: row.created_at,
                    previous_hash: row.previous_hash.clone(),
                })
            }
        }
        if let Some(hash) = &row.hash {
            match &mut self.last_hash {
                // Reuse the allocation: hashes are all 64 bytes.
                Some(last) => {
                    last.clear();
                    last.push_str(hash);
                }
                None => self.last_hash = Some(hash.clone()),
            }
        }
    }

    /// The findings, check by check, each check's in chain order.
    ///
    /// # Errors
    ///
    /// [`AnchorMismatch`] when the anchor belongs to another chain (see the
    /// module docs on chain identity).
    pub fn finish(mut self) -> Result<Vec<Finding>, AnchorMismatch> {
        if let Some(state) = self.anchor.take() {
            let anchor = &state.anchor;
            let last = self.previous.as_ref().map(|p| p.id);
            if let Some(first) = &self.first
                && first.hash.as_deref() != Some(anchor.genesis_hash.as_str())
            {
                if state.head_seen.is_none() && first.previous_hash == GENESIS {
                    return Err(AnchorMismatch {
                        first_id: first.id,
                        first_hash: first.hash.clone().unwrap_or_else(|| "NULL".to_owned()),
                        anchor_genesis_hash: anchor.genesis_hash.clone(),
                        anchor_head_id: anchor.head_id,
                    });
                }
                let (first_id, genesis) = (first.id, anchor.genesis_hash.clone());
                let linked = first.previous_hash == genesis;
                self.report(CheckName::ChainAnchor, first_id, || {
                    if linked {
                        format!("the anchor's genesis row (hash {genesis}) was deleted: the chain now starts at row {first_id}")
                    } else {
                        format!(
                            "the chain no longer starts at the anchor's genesis row (hash {genesis}): history was \
                             rewritten or deleted from the start; it now starts at row {first_id}"
                        )
                    }
                });
            }
            let head_id = anchor.head_id;
            let head_hash = anchor.head_hash.clone();
            match state.head_seen {
                None => self.report(CheckName::ChainAnchor, head_id, || {
                    let now = match last {
                        Some(id) => format!("the chain now ends at row {id}"),
                        None => "the chain is now empty".to_owned(),
                    };
                    format!(
                        "the anchored head row {head_id} (of {} rows when anchored) is gone: the newest rows were \
                         deleted; {now}",
                        anchor.rows
                    )
                }),
                Some(seen) if seen.as_deref() != Some(head_hash.as_str()) => {
                    self.report(CheckName::ChainAnchor, head_id, || {
                        format!(
                            "the anchored head row {head_id} now has hash {} instead of {head_hash}: history up to \
                             it was rewritten (e.g. a row edited and the chain re-hashed after it)",
                            seen.as_deref().unwrap_or("NULL")
                        )
                    })
                }
                Some(_) => {}
            }
        }
        let mut findings = Vec::new();
        for (check, capped) in self.findings {
            findings.extend(capped.kept);
            if capped.dropped > 0 {
                findings.push(Finding::new(
                    check,
                    AUDIT_TABLE,
                    None,
                    format!("{} more {check} findings not listed", capped.dropped),
                ));
            }
        }
        Ok(findings)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00.000001Z".parse().unwrap()
    }

    /// A valid chain of `n` rows, ids 1..=n, one second apart.
    fn chain(n: i64) -> Vec<AuditRow> {
        let mut rows: Vec<AuditRow> = Vec::new();
        for id in 1..=n {
            let previous_hash = rows
                .last()
                .map(|r| r.hash.clone().unwrap())
                .unwrap_or_else(|| GENESIS.to_owned());
            let mut row = AuditRow {
                id,
                created_at: t0() + Duration::seconds(id),
                tenant_id: (id % 3 != 0).then_some(id % 5),
                actor: "system".into(),
                action: "invoice.created".into(),
                entity_type: "invoice".into(),
                entity_id: id.to_string(),
                payload: format!("{{\"n\":{id}}}"),
                previous_hash,
                hash: None,
            };
            row.hash = Some(row.canonical_hash());
            rows.push(row);
        }
        rows
    }

    fn rehash_from(rows: &mut [AuditRow], from: usize) {
        for i in from..rows.len() {
            if i > 0 {
                rows[i].previous_hash = rows[i - 1].hash.clone().unwrap();
            }
            rows[i].hash = Some(rows[i].canonical_hash());
        }
    }

    fn anchor_of(rows: &[AuditRow]) -> Anchor {
        let head = rows.last().unwrap();
        Anchor {
            format: super::super::anchor::ANCHOR_FORMAT,
            database: "test".into(),
            recorded_at: head.created_at,
            genesis_hash: rows[0].hash.clone().unwrap(),
            head_id: head.id,
            head_hash: head.hash.clone().unwrap(),
            head_created_at: head.created_at,
            rows: rows.len() as u64,
        }
    }

    fn verify(rows: &[AuditRow], anchor: Option<&Anchor>) -> Result<Vec<Finding>, AnchorMismatch> {
        let mut verifier = ChainVerifier::new(anchor);
        for row in rows {
            verifier.push(row);
        }
        assert_eq!(verifier.rows(), rows.len() as u64);
        verifier.finish()
    }

    fn checks(findings: &[Finding]) -> Vec<(CheckName, Option<String>)> {
        findings.iter().map(|f| (f.check, f.key.clone())).collect()
    }

    fn key(id: i64) -> Option<String> {
        Some(id.to_string())
    }

    #[test]
    fn a_valid_chain_has_no_findings_with_or_without_its_anchor() {
        let rows = chain(20);
        assert_eq!(verify(&rows, None).unwrap(), vec![]);
        assert_eq!(verify(&rows, Some(&anchor_of(&rows))).unwrap(), vec![]);
        assert_eq!(verify(&[], None).unwrap(), vec![]);
    }

    #[test]
    fn rows_appended_after_the_anchor_are_fine() {
        let rows = chain(20);
        let anchor = anchor_of(&rows[..12]);
        assert_eq!(verify(&rows, Some(&anchor)).unwrap(), vec![]);
    }

    #[test]
    fn an_edited_payload_is_a_content_finding_the_playbook_misses() {
        let mut rows = chain(10);
        rows[4].payload = "{\"n\":999}".into();
        assert_eq!(
            checks(&verify(&rows, None).unwrap()),
            vec![(CheckName::ChainContent, key(5))]
        );
    }

    #[test]
    fn a_re_hashed_chain_is_caught_only_by_the_anchor() {
        let mut rows = chain(10);
        let anchor = anchor_of(&rows);
        rows[4].payload = "{\"n\":999}".into();
        rehash_from(&mut rows, 4);
        assert_eq!(verify(&rows, None).unwrap(), vec![]);
        assert_eq!(
            checks(&verify(&rows, Some(&anchor)).unwrap()),
            vec![(CheckName::ChainAnchor, key(10))]
        );
    }

    #[test]
    fn a_chain_re_hashed_from_its_first_row_is_not_mistaken_for_another_chain() {
        let mut rows = chain(10);
        let anchor = anchor_of(&rows);
        rows[0].payload = "{}".into();
        rehash_from(&mut rows, 0);
        assert_eq!(
            checks(&verify(&rows, Some(&anchor)).unwrap()),
            vec![(CheckName::ChainAnchor, key(1)), (CheckName::ChainAnchor, key(10))]
        );
    }

    #[test]
    fn a_truncated_tail_is_caught_only_by_the_anchor() {
        let rows = chain(10);
        let anchor = anchor_of(&rows);
        assert_eq!(verify(&rows[..7], None).unwrap(), vec![]);
        let findings = verify(&rows[..7], Some(&anchor)).unwrap();
        assert_eq!(checks(&findings), vec![(CheckName::ChainAnchor, key(10))]);
        assert!(findings[0].detail.contains("ends at row 7"), "{}", findings[0].detail);
        let emptied = verify(&[], Some(&anchor)).unwrap();
        assert_eq!(checks(&emptied), vec![(CheckName::ChainAnchor, key(10))]);
    }

    #[test]
    fn another_chains_anchor_is_an_error_naming_both_hashes() {
        let rows = chain(10);
        let mut other = chain(10);
        for row in &mut other {
            row.actor = "someone else".into();
        }
        rehash_from(&mut other, 0);
        let anchor = anchor_of(&other);
        let mut moved = anchor.clone();
        moved.head_created_at += Duration::microseconds(1);
        let err = verify(&rows, Some(&moved)).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("anchor belongs to another chain"), "{message}");
        assert!(message.contains(rows[0].hash.as_deref().unwrap()), "{message}");
        assert!(message.contains(&anchor.genesis_hash), "{message}");
    }

    #[test]
    fn deleted_oldest_rows_are_a_genesis_finding() {
        let rows = chain(10);
        let anchor = anchor_of(&rows);
        assert_eq!(
            checks(&verify(&rows[3..], None).unwrap()),
            vec![(CheckName::ChainGenesis, key(4))]
        );
        assert_eq!(
            checks(&verify(&rows[1..], Some(&anchor)).unwrap()),
            vec![(CheckName::ChainGenesis, key(2)), (CheckName::ChainAnchor, key(2))]
        );
    }

    #[test]
    fn a_second_genesis_is_missed_by_the_links_check_but_found() {
        let mut rows = chain(10);
        rows[5].previous_hash = GENESIS.into();
        rehash_from(&mut rows, 5);
        // Re-hashing links row 6 back in; only GENESIS itself is wrong.
        rows[5].previous_hash = GENESIS.into();
        rows[5].hash = Some(rows[5].canonical_hash());
        rehash_from(&mut rows, 6);
        assert_eq!(
            checks(&verify(&rows, None).unwrap()),
            vec![(CheckName::ChainGenesis, key(6))]
        );
    }

    #[test]
    fn a_broken_link_is_counted_as_the_playbook_counts_it() {
        let mut rows = chain(10);
        rows.remove(4); // row 5 deleted: row 6 links to a hash no longer there
        assert_eq!(
            checks(&verify(&rows, None).unwrap()),
            vec![(CheckName::ChainLinks, key(6))]
        );
    }

    #[test]
    fn null_hashes_are_skipped_by_the_lag_and_reported() {
        let mut rows = chain(10);
        rows[9].hash = None;
        // The last row: the playbook sees nothing at all.
        assert_eq!(
            checks(&verify(&rows, None).unwrap()),
            vec![(CheckName::ChainNullHash, key(10))]
        );
        let mut rows = chain(10);
        rows[3].hash = None;
        // Mid-chain: the next row's link skips to row 3's hash, as 4.1's LAG does.
        assert_eq!(
            checks(&verify(&rows, None).unwrap()),
            vec![(CheckName::ChainLinks, key(5)), (CheckName::ChainNullHash, key(4))]
        );
    }

    /// Re-keys rows as concurrent writers do: the id is drawn before the
    /// chain's lock, so ids need not follow chain order.
    fn with_ids(rows: &mut [AuditRow], ids: &[i64]) {
        for (row, id) in rows.iter_mut().zip(ids) {
            row.id = *id;
        }
        rehash_from(rows, 0);
    }

    #[test]
    fn ids_out_of_chain_order_and_ties_in_link_order_are_not_findings() {
        let mut rows = chain(6);
        with_ids(&mut rows, &[1, 3, 2, 6, 4, 5]);
        assert_eq!(verify(&rows, None).unwrap(), vec![]);
        assert_eq!(verify(&rows, Some(&anchor_of(&rows))).unwrap(), vec![]);

        // A tie the ids order as the chain links it: read correctly.
        let mut rows = chain(6);
        rows[3].created_at = rows[2].created_at;
        rehash_from(&mut rows, 3);
        assert_eq!(verify(&rows, None).unwrap(), vec![]);
    }

    #[test]
    fn a_chain_running_backwards_is_an_ordering_finding() {
        // A tie the ids order against the links: the chain runs 1,2,4,3,5,6
        // (row 3 links to row 4), 4.1's order reads 1,2,3,4,5,6.
        let mut rows = chain(6);
        with_ids(&mut rows, &[1, 2, 4, 3, 5, 6]);
        rows[3].created_at = rows[2].created_at;
        rehash_from(&mut rows, 3);
        rows.swap(2, 3);
        let findings = verify(&rows, None).unwrap();
        assert_eq!(
            checks(&findings),
            vec![
                (CheckName::ChainLinks, key(3)),
                (CheckName::ChainLinks, key(4)),
                (CheckName::ChainLinks, key(5)),
                (CheckName::ChainOrdering, key(4)),
            ]
        );
        assert!(findings[3].detail.contains("ties"), "{}", findings[3].detail);

        // Row 5 moved before row 4 in time (not re-hashed): 4.1 reads
        // 1,2,3,5,4,6, and row 5 still links to row 4, which now follows it.
        let mut rows = chain(6);
        rows[4].created_at = rows[3].created_at - Duration::milliseconds(1);
        rows.swap(3, 4);
        let findings = verify(&rows, None).unwrap();
        assert!(
            checks(&findings).contains(&(CheckName::ChainOrdering, key(4))),
            "{findings:?}"
        );
        assert!(
            checks(&findings).contains(&(CheckName::ChainContent, key(5))),
            "{findings:?}"
        );
    }

    #[test]
    fn findings_are_capped_per_check_with_a_count() {
        let mut rows = chain(FINDINGS_CAP as i64 + 25);
        for row in &mut rows {
            row.payload.push('!');
        }
        let findings = verify(&rows, None).unwrap();
        assert_eq!(findings.len(), FINDINGS_CAP + 1);
        let last = findings.last().unwrap();
        assert_eq!((last.check, last.key.as_deref()), (CheckName::ChainContent, None));
        assert!(last.detail.starts_with("25 more"), "{}", last.detail);
    }
}
