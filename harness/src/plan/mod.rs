//! Plans: a scenario resolved into typed steps, grouped into stages whose steps may run in parallel, that can be
//! rendered as the shell commands a person following the guide would type.

mod build;
mod render;
mod types;

pub use build::build;
pub use render::{ctx_var as render_ctx_var, curl_target, render_shell};
pub use types::*;
