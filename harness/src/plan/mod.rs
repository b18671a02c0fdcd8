//! Plans: a scenario resolved into steps of typed actions, grouped into stages whose steps may run in parallel.
//! `meshconf plan` renders those actions as the shell commands a person following the guide would type, and the
//! runner executes the same actions.

mod action;
mod build;
mod compare;
mod render;
mod types;

pub use action::*;
pub use build::{Deadlines, build, build_with};
pub use compare::compare_transcript;
pub use render::{action_lines, ctx_var as render_ctx_var, curl_target, preamble, render_shell, step_header};
pub use types::*;
