//! The built-in drills as tests: one `#[tokio::test]` per line of the drill
//! registry ([`drillbook::for_each_drill!`], `src/drills/mod.rs`), each a
//! wrapper asserting that `drillbook::drills::<name>::run()` passed: a drill
//! that stopped on an error fails its test with the error's whole chain. What
//! each drill does is documented in its module, `src/drills/<name>.rs`.
//!
//! A drill's test lives at `<cadence>::<backends>::<name>`, e.g.
//! `monthly::everywhere::complete_infrastructure_loss` or
//! `weekly::own_servers::rpo_wal_archiving`, so the nextest profiles in
//! `.config/nextest.toml` select by path (`drill-monthly`:
//! `test(/^monthly::/)`, `drill-staging`: `test(/::everywhere::/)`) and
//! never name a drill. Cluster drills are `#[ignore]`d: without a cluster
//! they fail, so only `--run-ignored` runs them, where one exists.
//!
//! ```text
//! cargo nextest run --profile drill          # every local drill, one at a time
//! cargo nextest run --profile drill-weekly   # one cadence
//! ```

/// Expands the trailing tokens when the first two words are the same
/// registry word, to nothing otherwise (`macro_rules!` compares a token
/// only with a literal one).
macro_rules! if_same {
    (daily daily $($then:tt)*) => { $($then)* };
    (weekly weekly $($then:tt)*) => { $($then)* };
    (monthly monthly $($then:tt)*) => { $($then)* };
    (quarterly quarterly $($then:tt)*) => { $($then)* };
    (everywhere everywhere $($then:tt)*) => { $($then)* };
    (own_servers own_servers $($then:tt)*) => { $($then)* };
    ($wanted:ident $word:ident $($then:tt)*) => {};
}

/// Asserts that a drill ran to the end and passed; a drill stopped by an
/// error fails with the error and every cause under it.
#[track_caller]
fn assert_drill(name: &str, outcome: Result<drillbook::drill::DrillSummary, drillbook::drill::DrillError>) {
    match outcome {
        Ok(summary) => summary.assert_passed(),
        Err(error) => panic!("drill `{name}` stopped: {}", drillbook::drill::error_chain(&error)),
    }
}

/// One drill's test.
macro_rules! drill_test {
    ($name:ident cluster $($flag:ident)?) => {
        drill_test!(@ #[ignore = "needs a Kubernetes cluster (DRILL_KUBE_CONTEXT or K3s): not available on this machine"] $name $($flag)?);
    };
    ($name:ident local $($flag:ident)?) => {
        drill_test!(@ $name $($flag)?);
    };
    (@ $(#[$attr:meta])* $name:ident) => {
        #[tokio::test]
        $(#[$attr])*
        async fn $name() {
            crate::assert_drill(stringify!($name), drillbook::drills::$name::run().await);
        }
    };
    // PostgreSQL runs `drillbook` as archive/restore command: the one built
    // with these tests, not this test binary.
    (@ $(#[$attr:meta])* $name:ident runs_drillbook) => {
        #[tokio::test]
        $(#[$attr])*
        async fn $name() {
            let outcome = drillbook::drills::$name::run_with(std::path::Path::new(env!("CARGO_BIN_EXE_drillbook"))).await;
            crate::assert_drill(stringify!($name), outcome);
        }
    };
}

/// The registry's drills whose cadence and backends are the two words
/// given, as a module named after the backends.
macro_rules! group {
    ($cadence:ident $backends:ident { $($name:ident: $scenario:ident, $c:ident, $b:ident, $lane:ident $(, $flag:ident)?;)* }) => {
        pub mod $backends {
            $(if_same! { $cadence $c if_same! { $backends $b drill_test! { $name $lane $($flag)? } } })*
        }
    };
}

/// Every drill's test, at `<cadence>::<backends>::<name>`.
macro_rules! drill_tests {
    ($($registry:tt)*) => {
        pub mod daily {
            group! { daily everywhere { $($registry)* } }
            group! { daily own_servers { $($registry)* } }
        }
        pub mod weekly {
            group! { weekly everywhere { $($registry)* } }
            group! { weekly own_servers { $($registry)* } }
        }
        pub mod monthly {
            group! { monthly everywhere { $($registry)* } }
            group! { monthly own_servers { $($registry)* } }
        }
        pub mod quarterly {
            group! { quarterly everywhere { $($registry)* } }
            group! { quarterly own_servers { $($registry)* } }
        }
    };
}

drillbook::for_each_drill!(drill_tests);
