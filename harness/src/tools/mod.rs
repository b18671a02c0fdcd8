//! External tools (kind, istioctl, helm, docker, kwokctl) run as processes: argv vectors, timeouts, captured output,
//! secrets redacted before anything is logged or reported.

mod helm;
mod istioctl;
mod kind;
mod process;
mod redact;

pub use helm::Helm;
pub use istioctl::{Istioctl, IstioctlSource, download_istioctl, release_urls};
pub use kind::{Docker, KIND_BRIDGE, Kind, find_engine, meshconf_engine_host, users_engine_host};
pub use process::{Cmd, CmdOutput, ToolError, which};
pub use redact::{redact, tail};

use std::path::PathBuf;

/// meshconf's cache outside any clone: `$MESHCONF_CACHE`, else `$XDG_CACHE_HOME/meshconf`, else
/// `~/.cache/meshconf`: the rule of `tools/lib/cache.sh`, which every script sources.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(&|k| std::env::var_os(k))
}

/// The Go tools' directory: `$MESHCONF_TOOLS_CACHE` (an alias kept for older setups), else `<cache>/tools`.
pub fn tools_cache_dir() -> PathBuf {
    tools_cache_dir_from(&|k| std::env::var_os(k))
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

fn set(lookup: Lookup<'_>, key: &str) -> Option<PathBuf> {
    lookup(key).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// [`cache_dir`] with the environment given (tests).
pub fn cache_dir_from(lookup: Lookup<'_>) -> PathBuf {
    set(lookup, "MESHCONF_CACHE").unwrap_or_else(|| {
        set(lookup, "XDG_CACHE_HOME")
            .or_else(|| set(lookup, "HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("meshconf")
    })
}

/// [`tools_cache_dir`] with the environment given (tests).
pub fn tools_cache_dir_from(lookup: Lookup<'_>) -> PathBuf {
    set(lookup, "MESHCONF_TOOLS_CACHE").unwrap_or_else(|| cache_dir_from(lookup).join("tools"))
}
