//! The playbook's decision matrix (section 2): each scenario, the action it
//! calls for and the RTO that action is expected to meet.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The rows of the playbook's decision matrix (section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Scenario {
    SinglePodCrash,
    AllPodsUnhealthy,
    DbConnectionExhaustion,
    DbCorruptionSingleTable,
    DbCorruptionFull,
    CompleteInfrastructureLoss,
    DataCenterFailure,
}

/// One row of the decision matrix, kept together so it reads like the table.
struct MatrixRow {
    slug: &'static str,
    title: &'static str,
    action: &'static str,
    rto: Duration,
}

impl Scenario {
    const ALL: [Self; 7] = [
        Self::SinglePodCrash,
        Self::AllPodsUnhealthy,
        Self::DbConnectionExhaustion,
        Self::DbCorruptionSingleTable,
        Self::DbCorruptionFull,
        Self::CompleteInfrastructureLoss,
        Self::DataCenterFailure,
    ];

    /// Every scenario, in the matrix's order.
    pub fn all() -> &'static [Self] {
        &Self::ALL
    }

    /// The scenario whose [`slug`](Self::slug) is `slug`, if this drillbook knows it.
    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.slug() == slug)
    }

    #[rustfmt::skip]
    const fn row(self) -> MatrixRow {
        const fn row(slug: &'static str, title: &'static str, action: &'static str, rto: Duration) -> MatrixRow {
            MatrixRow { slug, title, action, rto }
        }
        match self {
            Self::SinglePodCrash => row("single-pod-crash", "Single pod crash", "Auto-heal (K8s)", Duration::from_mins(2)),
            Self::AllPodsUnhealthy => row("all-pods-unhealthy", "All pods unhealthy", "Rollback deployment", Duration::from_mins(10)),
            Self::DbConnectionExhaustion => row("db-connection-exhaustion", "DB connection exhaustion", "Kill queries + restart", Duration::from_mins(15)),
            Self::DbCorruptionSingleTable => row("db-corruption-single-table", "DB corruption (single table)", "Restore table from backup", Duration::from_mins(30)),
            Self::DbCorruptionFull => row("db-corruption-full", "DB corruption (full)", "Point-in-time recovery", Duration::from_hours(2)),
            Self::CompleteInfrastructureLoss => row("complete-infrastructure-loss", "Complete infrastructure loss", "Full restore from backup", Duration::from_hours(4)),
            Self::DataCenterFailure => row("data-center-failure", "Data center failure", "Failover to standby region", Duration::from_hours(1)),
        }
    }

    /// Stable kebab-case identifier, also the serde form: `complete-infrastructure-loss`.
    pub const fn slug(self) -> &'static str {
        self.row().slug
    }

    /// The matrix's wording: `Complete infrastructure loss`.
    pub const fn title(self) -> &'static str {
        self.row().title
    }

    /// The matrix's action: `Full restore from backup`.
    pub const fn action(self) -> &'static str {
        self.row().action
    }

    /// The matrix's expected RTO: `< 4 hours` is four hours.
    pub const fn default_rto(self) -> Duration {
        self.row().rto
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_mins(1);
    const HOUR: Duration = Duration::from_hours(1);

    #[test]
    fn scenarios_follow_the_decision_matrix() {
        let rows: Vec<_> = Scenario::all().iter().map(|s| (s.title(), s.default_rto())).collect();
        assert_eq!(
            rows,
            [
                ("Single pod crash", 2 * MINUTE),
                ("All pods unhealthy", 10 * MINUTE),
                ("DB connection exhaustion", 15 * MINUTE),
                ("DB corruption (single table)", 30 * MINUTE),
                ("DB corruption (full)", 2 * HOUR),
                ("Complete infrastructure loss", 4 * HOUR),
                ("Data center failure", HOUR),
            ]
        );
        assert_eq!(Scenario::DbConnectionExhaustion.action(), "Kill queries + restart");
    }

    #[test]
    fn scenario_serde_form_is_its_slug() {
        for &scenario in Scenario::all() {
            let json = serde_json::to_string(&scenario).unwrap();
            assert_eq!(json, format!("\"{}\"", scenario.slug()));
            assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), scenario);
            assert_eq!(Scenario::from_slug(scenario.slug()), Some(scenario));
        }
        assert_eq!(Scenario::from_slug("meteor-strike"), None);
    }
}
