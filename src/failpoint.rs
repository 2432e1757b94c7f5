//! Named crash points for the crash-safety tests, with TiKV's `fail` crate.
//!
//! `failpoint!("restore::before_verify")` marks a phase boundary of a
//! multi-step operation, inside an `async fn`. Without the `failpoints`
//! feature it compiles to nothing. With it, a point configured through
//! `fail` (the binary reads `FAILPOINTS`, e.g.
//! `FAILPOINTS=restore::before_verify=return`) announces itself on stderr as
//! `drillbook: failpoint <name> reached`, then acts:
//!
//! - `return` holds the operation at that point for good, without blocking
//!   a thread: the runtime keeps serving signals, so a test can kill the
//!   real `drillbook` process there with SIGKILL, SIGTERM or SIGINT
//!   (tests/it/crash_points.rs), or drop the operation's future in-process;
//! - any other `fail` action (`panic`, `sleep(ms)`, ...) acts as `fail`
//!   defines it.

/// Marks a crash point in an `async fn`; see the module docs.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        if $crate::failpoint::reached($name) {
            ::std::future::pending::<()>().await;
        }
    };
}

/// Announces `name` if it is configured and lets `fail` act on it; `true`
/// when the action is `return`: hold here.
#[cfg(feature = "failpoints")]
pub fn reached(name: &str) -> bool {
    if fail::list().iter().any(|(point, _)| point == name) {
        eprintln!("drillbook: failpoint {name} reached");
        REACHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
    }
    fail::eval(name, |_| ()).is_some()
}

#[cfg(feature = "failpoints")]
static REACHED: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Whether this process reached the configured point `name` (in-process tests).
#[cfg(feature = "failpoints")]
pub fn was_reached(name: &str) -> bool {
    REACHED.lock().unwrap_or_else(|e| e.into_inner()).contains(name)
}

/// Reads `FAILPOINTS` for the life of the process (the binary's `main`).
#[cfg(feature = "failpoints")]
pub fn setup() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}
