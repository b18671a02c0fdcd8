//! Exit codes shared by the CLI and the suites, so scripts can tell a mesh regression from a broken setup.

/// The process exit status of a meshconf command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStatus {
    /// Every check passed.
    Passed = 0,
    /// A conformance check failed: the mesh did not behave as the guide says.
    ConformanceFailure = 1,
    /// Bad input or usage: nothing was created.
    BadInput = 2,
    /// Infrastructure error: a cluster, tool or API call failed before the mesh could be judged.
    Infrastructure = 3,
}

impl ExitStatus {
    /// The numeric process exit code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Combines two outcomes, keeping the most severe (infrastructure > conformance > pass).
    pub fn worst(self, other: ExitStatus) -> ExitStatus {
        fn rank(s: ExitStatus) -> u8 {
            match s {
                ExitStatus::Passed => 0,
                ExitStatus::ConformanceFailure => 1,
                ExitStatus::Infrastructure => 2,
                ExitStatus::BadInput => 3,
            }
        }
        if rank(other) > rank(self) { other } else { self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_documented_contract() {
        assert_eq!(ExitStatus::Passed.code(), 0);
        assert_eq!(ExitStatus::ConformanceFailure.code(), 1);
        assert_eq!(ExitStatus::BadInput.code(), 2);
        assert_eq!(ExitStatus::Infrastructure.code(), 3);
    }

    #[test]
    fn worst_keeps_infrastructure_over_conformance() {
        assert_eq!(
            ExitStatus::Passed.worst(ExitStatus::ConformanceFailure),
            ExitStatus::ConformanceFailure
        );
        assert_eq!(
            ExitStatus::Infrastructure.worst(ExitStatus::ConformanceFailure),
            ExitStatus::Infrastructure
        );
        assert_eq!(
            ExitStatus::ConformanceFailure.worst(ExitStatus::Passed),
            ExitStatus::ConformanceFailure
        );
    }
}
