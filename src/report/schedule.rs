//! The drill schedule, playbook section 8: how often each kind of drill runs.
//!
//! | playbook drill | frequency | drills here |
//! |---|---|---|
//! | Full restore test | Monthly | restores from backup: full, PITR, single table, and the connection-exhaustion recovery |
//! | Failover drill | Quarterly | standby-region failover, replication RPO, traffic switch, pod auto-heal and rollback |
//! | Backup verification | Weekly | integrity checks that detect damage and restore from base backup + WAL |
//! | Audit chain validation | Daily | the audit-chain drill (and `drillbook verify` against the real database) |
//!
//! Only the cadences live here: each drill's cadence is on its line of the
//! drill registry (`drillbook::drills`, a layer above reports), which also
//! lists a cadence's drills. nextest selects a cadence with the profiles
//! `drill-monthly`, `drill-quarterly`, `drill-weekly` and `drill-daily`
//! ([`Cadence::nextest_profile`]) in `.config/nextest.toml`, by the test
//! path `<cadence>::...` the registry gives each drill.
//! The playbook's bi-annual communication drill is an escalation exercise
//! for people and has no test.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cadence_names_its_playbook_drill_and_profile() {
        let rows: Vec<_> = Cadence::ALL
            .into_iter()
            .map(|c| (c.as_str(), c.playbook_drill(), c.nextest_profile()))
            .collect();
        assert_eq!(
            rows,
            [
                ("daily", "Audit chain validation", "drill-daily".to_owned()),
                ("weekly", "Backup verification", "drill-weekly".to_owned()),
                ("monthly", "Full restore test", "drill-monthly".to_owned()),
                ("quarterly", "Failover drill", "drill-quarterly".to_owned()),
            ]
        );
    }

    #[test]
    fn cadences_parse_and_round_trip() {
        assert_eq!("Monthly".parse::<Cadence>(), Ok(Cadence::Monthly));
        assert_eq!(" daily ".parse::<Cadence>(), Ok(Cadence::Daily));
        assert!("yearly".parse::<Cadence>().unwrap_err().contains("`yearly`"));
        for cadence in Cadence::ALL {
            assert_eq!(cadence.to_string().parse::<Cadence>(), Ok(cadence));
        }
    }
}
