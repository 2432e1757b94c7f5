//! The playbook, as code (layer 1): what it says to run and what it expects.
//!
//! - [`queries`]: its SQL (sections 3.2 step 4, 3.3 and 4), run verbatim,
//!   and the answers a healthy database gives.
//! - [`matrix`]: its decision matrix (section 2): the [`Scenario`]s, each
//!   with its action and expected RTO.

pub mod matrix;
pub mod queries;

pub use matrix::Scenario;
pub use queries::{
    AUDIT_HASH_CHAIN, BILLING_RUN_CONSISTENCY, CRITICAL_TABLE_COUNTS, INVOICE_LINE_BALANCE, LEDGER_ENTRY_CONSISTENCY,
    ORPHANED_RECORDS, PITR_LATEST_RECORDS, PlaybookAnswers, PlaybookQuery, TextRow,
};
