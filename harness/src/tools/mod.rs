//! External tools (kind, istioctl, docker, kwokctl) run as processes: argv vectors, timeouts, captured output,
//! secrets redacted before anything is logged or reported.

mod istioctl;
mod kind;
mod process;
mod redact;

pub use istioctl::{Istioctl, IstioctlSource, download_istioctl, release_urls};
pub use kind::{Docker, Kind};
pub use process::{Cmd, CmdOutput, ToolError, which};
pub use redact::{redact, tail};
