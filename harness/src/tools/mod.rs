//! External tools (kind, istioctl, docker, kwokctl) run as processes: argv vectors, timeouts, captured output,
//! secrets redacted before anything is logged or reported.

mod istioctl;
mod kind;
mod process;
mod redact;

pub use istioctl::{Istioctl, IstioctlSource, download_istioctl, release_urls};
pub use kind::{Docker, KIND_BRIDGE, Kind, find_engine, meshconf_engine_host};
pub use process::{Cmd, CmdOutput, ToolError, which};
pub use redact::{redact, tail};

use std::path::PathBuf;

/// meshconf's cache outside any clone: `$MESHCONF_CACHE`, else `$XDG_CACHE_HOME/meshconf`, else
/// `~/.cache/meshconf` (tools/engine.sh, tools/images.sh and tools/rootfs.sh use the same rule).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MESHCONF_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("meshconf")
}
