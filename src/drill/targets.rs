//! What a drill must achieve ([`Targets`]), layered, later layers win:
//!
//! 1. the playbook's decision matrix ([`Scenario::default_rto`]), no RPO target;
//! 2. `DRILL_RTO_TARGET` / `DRILL_RPO_TARGET`, for every drill;
//! 3. `DRILL_RTO_TARGET_<SCENARIO>` / `DRILL_RPO_TARGET_<SCENARIO>`, e.g.
//!    `DRILL_RTO_TARGET_COMPLETE_INFRASTRUCTURE_LOSS`;
//! 4. [`Drill::with_rto_target`](super::Drill::with_rto_target) /
//!    [`Drill::with_rpo_target`](super::Drill::with_rpo_target) in the drill.
//!
//! Values take [`parse_duration`]'s form: `90s`, `15m`, `2h`, `1h30m`, `1h 30m`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DrillError, Result};
use crate::playbook::Scenario;
use crate::time::parse_duration;

/// What a drill must achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    pub rto: Duration,
    /// `None` means RPO is measured and reported but not judged.
    pub rpo: Option<Duration>,
}

impl Targets {
    /// The decision matrix's RTO, no RPO target.
    pub fn for_scenario(scenario: Scenario) -> Self {
        Self {
            rto: scenario.default_rto(),
            rpo: None,
        }
    }

    /// The matrix's targets with the process environment's overrides applied
    /// (see the [module docs](self) for the layering).
    ///
    /// # Errors
    ///
    /// [`DrillError::InvalidTarget`] if an override is not a duration.
    pub fn from_env(scenario: Scenario) -> Result<Self> {
        // Lossy, so a non-UTF-8 value fails parsing visibly instead of
        // being ignored as if unset.
        Self::from_lookup(scenario, |name| {
            std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
        })
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`
    /// so tests need not mutate the (process-wide) environment. An empty
    /// value counts as unset, as CI templates pass empty strings for unset
    /// inputs.
    ///
    /// # Errors
    ///
    /// [`DrillError::InvalidTarget`] if an override is not a duration.
    pub fn from_lookup(scenario: Scenario, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let suffix = env_suffix(scenario);
        let read = |variable: &str| -> Result<Option<Duration>> {
            let Some(value) = lookup(variable).filter(|value| !value.trim().is_empty()) else {
                return Ok(None);
            };
            parse_duration(&value)
                .map(Some)
                .map_err(|source| DrillError::InvalidTarget {
                    variable: variable.to_owned(),
                    source,
                })
        };
        let mut targets = Self::for_scenario(scenario);
        for variable in ["DRILL_RTO_TARGET".to_owned(), format!("DRILL_RTO_TARGET_{suffix}")] {
            if let Some(rto) = read(&variable)? {
                targets.rto = rto;
            }
        }
        for variable in ["DRILL_RPO_TARGET".to_owned(), format!("DRILL_RPO_TARGET_{suffix}")] {
            if let Some(rpo) = read(&variable)? {
                targets.rpo = Some(rpo);
            }
        }
        Ok(targets)
    }
}

/// Suffix of the per-scenario environment overrides: `COMPLETE_INFRASTRUCTURE_LOSS`.
fn env_suffix(scenario: Scenario) -> String {
    scenario.slug().to_ascii_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const MINUTE: Duration = Duration::from_mins(1);
    const HOUR: Duration = Duration::from_hours(1);

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn targets_default_to_the_matrix() {
        let targets = Targets::from_lookup(Scenario::DbCorruptionSingleTable, lookup(&[])).unwrap();
        assert_eq!(
            targets,
            Targets {
                rto: 30 * MINUTE,
                rpo: None
            }
        );
    }

    #[test]
    fn env_suffix_is_the_slug_in_capitals() {
        assert_eq!(
            env_suffix(Scenario::DbCorruptionSingleTable),
            "DB_CORRUPTION_SINGLE_TABLE"
        );
    }

    #[test]
    fn per_scenario_overrides_beat_global_ones() {
        let env = [
            ("DRILL_RTO_TARGET", "90s"),
            ("DRILL_RPO_TARGET", "1h"),
            ("DRILL_RTO_TARGET_COMPLETE_INFRASTRUCTURE_LOSS", "1h30m"),
            ("DRILL_RPO_TARGET_COMPLETE_INFRASTRUCTURE_LOSS", "5m"),
        ];
        let loss = Targets::from_lookup(Scenario::CompleteInfrastructureLoss, lookup(&env)).unwrap();
        assert_eq!(
            loss,
            Targets {
                rto: 90 * MINUTE,
                rpo: Some(5 * MINUTE)
            }
        );
        let crash = Targets::from_lookup(Scenario::SinglePodCrash, lookup(&env)).unwrap();
        assert_eq!(
            crash,
            Targets {
                rto: Duration::from_secs(90),
                rpo: Some(HOUR)
            }
        );
    }

    #[test]
    fn empty_overrides_count_as_unset() {
        let env = [("DRILL_RTO_TARGET", ""), ("DRILL_RPO_TARGET", "  ")];
        let targets = Targets::from_lookup(Scenario::SinglePodCrash, lookup(&env)).unwrap();
        assert_eq!(targets, Targets::for_scenario(Scenario::SinglePodCrash));
    }

    #[test]
    fn bad_override_names_variable_value_and_accepted_form() {
        let env = [("DRILL_RTO_TARGET_DATA_CENTER_FAILURE", "4 hourz")];
        let error = Targets::from_lookup(Scenario::DataCenterFailure, lookup(&env)).unwrap_err();
        assert!(
            matches!(&error, DrillError::InvalidTarget { variable, .. } if variable == "DRILL_RTO_TARGET_DATA_CENTER_FAILURE")
        );
        let source = std::error::Error::source(&error)
            .expect("error has a source")
            .to_string();
        let chain = format!("{error}: {source}");
        for needle in ["DRILL_RTO_TARGET_DATA_CENTER_FAILURE", "`4 hourz`", "`1h30m`"] {
            assert!(chain.contains(needle), "{needle:?} missing from {chain:?}");
        }
    }
}
