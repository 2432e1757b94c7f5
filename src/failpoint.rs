//! Named crash points for the crash-safety tests, with TiKV's `fail` crate.
//!
//! `failpoint!("restore::before_rename")` marks a phase boundary of a
//! multi-step operation. Without the `failpoints` feature it compiles to
//! nothing. With it, the binary reads `FAILPOINTS` (e.g.
//! `FAILPOINTS=restore::before_rename=pause`) and a test can hold a real
//! `drillbook` process at that boundary, then kill it (tests/crash_points.rs).
//! A configured point announces itself on stderr as
//! `drillbook: failpoint <name> reached`, so the test knows when to strike.

/// Marks a crash point; see the module docs.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::reached($name);
    };
}

/// Announces `name` if a test configured it, then lets `fail` act on it.
#[cfg(feature = "failpoints")]
pub fn reached(name: &str) {
    if fail::list().iter().any(|(point, _)| point == name) {
        eprintln!("drillbook: failpoint {name} reached");
    }
    fail::fail_point!(name);
}

/// Reads `FAILPOINTS` for the life of the process (the binary's `main`).
#[cfg(feature = "failpoints")]
pub fn setup() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}
