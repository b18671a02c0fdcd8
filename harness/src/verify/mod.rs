//! Verdicts on traffic: parse curl's answers, attribute each to the pod and cluster that served it, and judge
//! reachability and distribution with a stated false-failure bound.

mod check;
mod live;
mod parse;
mod stats;
mod verdict;

pub use check::{CheckRecord, CheckSpec, Convergence, Probe, ProbeError, run_check};
pub use live::{
    KindCounts, LiveVerdict, LoadReport, PhaseCounts, PhaseVerdict, ReportError, judge_live, render_table,
};
pub use parse::{Answer, parse_answers};
pub use stats::{ALPHA, BETA, default_requests, uniform_p_value};
pub use verdict::{At, Attribution, SourceVerdict, judge};
