//! The drill schedule, playbook section 8: every drill binary has a cadence.
//!
//! | playbook drill | frequency | drills here |
//! |---|---|---|
//! | Full restore test | Monthly | restores from backup: full, PITR, single table, and the connection-exhaustion recovery |
//! | Failover drill | Quarterly | standby-region failover, replication RPO, traffic switch, pod auto-heal and rollback |
//! | Backup verification | Weekly | integrity checks that detect damage and restore from base backup + WAL |
//! | Audit chain validation | Daily | the audit-chain drill (and `drillbook verify` against the real database) |
//!
//! nextest selects a cadence with the profiles `drill-monthly`,
//! `drill-quarterly`, `drill-weekly` and `drill-daily` in
//! `.config/nextest.toml`, whose filters are [`Cadence::nextest_filter`]
//! (a unit test keeps them equal). Another unit test fails when a `drill_*`
//! test target in Cargo.toml has no cadence here: add a row to [`SCHEDULE`].
//! The playbook's bi-annual communication drill is an escalation exercise
//! for people and has no binary.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How often a drill runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cadence {
    Daily,
    Weekly,
    Monthly,
    Quarterly,
}

impl Cadence {
    pub const ALL: [Self; 4] = [Self::Daily, Self::Weekly, Self::Monthly, Self::Quarterly];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Quarterly => "quarterly",
        }
    }

    /// The playbook's row (section 8) this cadence implements.
    pub fn playbook_drill(self) -> &'static str {
        match self {
            Self::Daily => "Audit chain validation",
            Self::Weekly => "Backup verification",
            Self::Monthly => "Full restore test",
            Self::Quarterly => "Failover drill",
        }
    }

    /// The nextest profile that runs this cadence: `drill-monthly`.
    pub fn nextest_profile(self) -> String {
        format!("drill-{}", self.as_str())
    }

    /// The drill binaries of this cadence, in [`SCHEDULE`]'s order.
    pub fn drills(self) -> impl Iterator<Item = &'static str> {
        SCHEDULE
            .iter()
            .filter(move |&&(_, cadence)| cadence == self)
            .map(|&(drill, _)| drill)
    }

    /// The nextest filterset selecting this cadence's binaries:
    /// `binary(=drill_a) | binary(=drill_b)`.
    pub fn nextest_filter(self) -> String {
        self.drills()
            .map(|drill| format!("binary(={drill})"))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

impl fmt::Display for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cadence {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(input.trim()))
            .ok_or_else(|| format!("unknown cadence `{input}`: expected daily, weekly, monthly or quarterly"))
    }
}

/// Every drill binary and its cadence.
pub const SCHEDULE: &[(&str, Cadence)] = &[
    // Full restore test, monthly.
    ("drill_complete_infrastructure_loss", Cadence::Monthly),
    ("drill_db_corruption_full", Cadence::Monthly),
    ("drill_db_corruption_single_table", Cadence::Monthly),
    ("drill_db_connection_exhaustion", Cadence::Monthly),
    // Failover drill, quarterly.
    ("drill_data_center_failure", Cadence::Quarterly),
    ("drill_rpo_streaming_replication", Cadence::Quarterly),
    ("drill_traffic_switch", Cadence::Quarterly),
    ("drill_pod_crash", Cadence::Quarterly),
    ("drill_all_pods_unhealthy", Cadence::Quarterly),
    // Backup verification, weekly.
    ("drill_rpo_wal_archiving", Cadence::Weekly),
    ("drill_db_corruption_physical", Cadence::Weekly),
    ("drill_corruption_ledger", Cadence::Weekly),
    ("drill_corruption_structure", Cadence::Weekly),
    // Audit chain validation, daily.
    ("drill_corruption_audit_chain", Cadence::Daily),
];

/// The cadence of a drill binary (`drill_complete_infrastructure_loss`) or
/// of a drill name without the prefix (`complete_infrastructure_loss`).
pub fn cadence_of(drill: &str) -> Option<Cadence> {
    SCHEDULE
        .iter()
        .find(|(name, _)| *name == drill || name.strip_prefix("drill_") == Some(drill))
        .map(|&(_, cadence)| cadence)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARGO_TOML: &str = include_str!("../../Cargo.toml");
    const NEXTEST_TOML: &str = include_str!("../../.config/nextest.toml");

    /// `name = "drill_*"` lines of `[[test]]` sections, by a line scan (the
    /// `toml` crate is not a dependency).
    fn drill_targets(cargo_toml: &str) -> Vec<String> {
        let mut section = "";
        let mut drills = Vec::new();
        for line in cargo_toml.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            let Some(value) = line.strip_prefix("name").map(str::trim_start) else {
                continue;
            };
            let Some(value) = value.strip_prefix('=') else { continue };
            let name = value.trim().trim_matches('"');
            if section == "[[test]]" && name.starts_with("drill_") {
                drills.push(name.to_owned());
            }
        }
        drills
    }

    #[test]
    fn every_drill_target_has_a_cadence() {
        let drills = drill_targets(CARGO_TOML);
        assert!(drills.len() >= 10, "the line scan found too few drills: {drills:?}");
        let missing: Vec<_> = drills.iter().filter(|d| cadence_of(d).is_none()).collect();
        assert!(
            missing.is_empty(),
            "drill targets without a cadence: {missing:?}; add them to SCHEDULE in src/report/schedule.rs \
             and the matching filter in .config/nextest.toml"
        );
    }

    #[test]
    fn schedule_names_each_drill_once_and_every_cadence_has_drills() {
        let mut names: Vec<_> = SCHEDULE.iter().map(|(name, _)| name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a drill is scheduled twice");
        for cadence in Cadence::ALL {
            assert!(cadence.drills().next().is_some(), "{cadence} has no drills");
        }
    }

    #[test]
    fn line_scan_ignores_other_sections() {
        let toml = "[package]\nname = \"drill_not_a_test\"\n[[bench]]\nname = \"drill_bench\"\n\
                    [[test]]\nname = \"drill_x\"\npath = \"drills/x.rs\"\n[[test]]\nname=\"fixture\"\n";
        assert_eq!(drill_targets(toml), ["drill_x"]);
    }

    /// The `default-filter` of `[profile.<name>]` in nextest.toml.
    fn profile_filter(profile: &str) -> Option<String> {
        let header = format!("[profile.{profile}]");
        let mut lines = NEXTEST_TOML.lines().map(str::trim).skip_while(|line| *line != header);
        lines.next()?;
        lines
            .take_while(|line| !line.starts_with('['))
            .find_map(|line| line.strip_prefix("default-filter"))
            .map(|rest| {
                rest.trim_start()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
    }

    #[test]
    fn nextest_profiles_select_exactly_the_schedule() {
        for cadence in Cadence::ALL {
            let profile = cadence.nextest_profile();
            let filter = profile_filter(&profile).unwrap_or_else(|| {
                panic!("[profile.{profile}] with a default-filter missing from .config/nextest.toml")
            });
            assert_eq!(
                filter,
                cadence.nextest_filter(),
                "[profile.{profile}] default-filter differs from SCHEDULE; copy Cadence::nextest_filter"
            );
        }
    }

    #[test]
    fn cadences_parse_and_look_up() {
        assert_eq!("Monthly".parse::<Cadence>(), Ok(Cadence::Monthly));
        assert!("yearly".parse::<Cadence>().unwrap_err().contains("`yearly`"));
        assert_eq!(cadence_of("complete_infrastructure_loss"), Some(Cadence::Monthly));
        assert_eq!(cadence_of("drill_corruption_audit_chain"), Some(Cadence::Daily));
        assert_eq!(cadence_of("drill_unknown"), None);
    }
}
