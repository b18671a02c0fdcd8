//! Running one external command with a timeout, its whole process group killed on expiry.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::redact::{redact, tail};

/// A process failed to run or to succeed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not installed.
    #[error("{program} not found on PATH: {hint}")]
    NotFound {
        /// Program name.
        program: String,
        /// What to do.
        hint: String,
    },
    /// It did not finish in time; its process group was killed.
    #[error("`{command}` timed out after {after:?} and was killed")]
    Timeout {
        /// Command line (redacted).
        command: String,
        /// The timeout.
        after: Duration,
        /// Output tail.
        tail: String,
    },
    /// It exited non-zero.
    #[error("`{command}` exited with {code}")]
    Failed {
        /// Command line (redacted).
        command: String,
        /// Exit code (-1 when killed by a signal).
        code: i32,
        /// Output tail (stderr then stdout, redacted).
        tail: String,
    },
    /// Spawning or waiting failed.
    #[error("cannot run `{command}`: {source}")]
    Io {
        /// Command line.
        command: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl ToolError {
    /// The command line and output tail, for reports.
    pub fn command_and_tail(&self) -> (Option<String>, Option<String>) {
        match self {
            ToolError::Timeout { command, tail, .. } | ToolError::Failed { command, tail, .. } => {
                (Some(command.clone()), Some(tail.clone()))
            }
            ToolError::Io { command, .. } => (Some(command.clone()), None),
            ToolError::NotFound { .. } => (None, None),
        }
    }
}

/// Captured result of a successful command.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// stdout (may hold secrets, e.g. a remote secret: never log it).
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// Wall time.
    pub duration: Duration,
}

/// A command to run: argv, environment, optional stdin, and a mandatory timeout.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    dir: Option<PathBuf>,
    timeout: Duration,
}

impl Cmd {
    /// A command with the default 2-minute timeout.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            dir: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, a: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Feeds bytes on stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Working directory.
    pub fn dir(mut self, d: impl Into<PathBuf>) -> Self {
        self.dir = Some(d.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The arguments.
    pub fn argv(&self) -> &[String] {
        &self.args
    }

    /// The environment overrides.
    pub fn envs(&self) -> &[(String, String)] {
        &self.env
    }

    /// The timeout.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The command line as a shell would show it, secrets redacted.
    pub fn display(&self) -> String {
        let mut parts = vec![self.program.display().to_string()];
        parts.extend(self.args.iter().map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        }));
        redact(&parts.join(" "))
    }

    /// Runs the command on a blocking thread; kills its process group when the timeout expires, and also when
    /// the returned future is dropped (a cancelled or interrupted step leaves no process behind).
    pub async fn run(self) -> Result<CmdOutput, ToolError> {
        let pids = Arc::new(Mutex::new(Vec::new()));
        let mut guard = KillOnDrop {
            pids: pids.clone(),
            armed: true,
        };
        let (command, timeout) = (self.display(), self.timeout);
        let blocking = tokio::task::spawn_blocking(move || self.run_tracked(Some(pids)));
        // The blocking thread enforces the timeout itself; this outer deadline is the net under it. A kind run
        // once saw two `istioctl proxy-config` calls (30 s timeout) return only when their step's 900 s deadline
        // polled them: whatever held them, no call may outlive its own timeout by more than the grace. At the
        // outer deadline the guard kills the process group and the call is a timeout.
        let result = match tokio::time::timeout(timeout + OUTER_GRACE, blocking).await {
            Ok(joined) => joined.map_err(|e| ToolError::Io {
                command: "<join>".into(),
                source: std::io::Error::other(e),
            })?,
            Err(_) => {
                return Err(ToolError::Timeout {
                    command,
                    after: timeout + OUTER_GRACE,
                    tail: "the command's own timeout did not end it; its process group was killed".into(),
                });
            }
        };
        guard.armed = false;
        result
    }

    /// Blocking variant of [`Cmd::run`].
    pub fn run_blocking(&self) -> Result<CmdOutput, ToolError> {
        self.run_tracked(None)
    }

    fn run_tracked(&self, track: Option<Arc<Mutex<Vec<u32>>>>) -> Result<CmdOutput, ToolError> {
        let command = self.display();
        // duct treats a Path program as a path ("./sh"); a bare name must stay a name so PATH is searched.
        let program: std::ffi::OsString = self.program.as_os_str().to_os_string();
        let mut expr = duct::cmd(program, &self.args)
            .stdout_capture()
            .stderr_capture()
            .unchecked();
        for (k, v) in &self.env {
            expr = expr.env(k, v);
        }
        expr = match &self.stdin {
            Some(b) => expr.stdin_bytes(b.clone()),
            None => expr.stdin_null(),
        };
        if let Some(d) = &self.dir {
            expr = expr.dir(d);
        }
        expr = expr.before_spawn(|c| {
            c.process_group(0);
            Ok(())
        });
        let started = Instant::now();
        let handle = expr.start().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ToolError::NotFound {
                    program: self.program.display().to_string(),
                    hint: "install it or put it on PATH (meshconf doctor lists prerequisites)".into(),
                }
            } else {
                ToolError::Io {
                    command: command.clone(),
                    source,
                }
            }
        })?;
        if let Some(t) = &track
            && let Ok(mut v) = t.lock()
        {
            v.extend(handle.pids());
        }
        let waited = handle
            .wait_timeout(self.timeout)
            .map_err(|source| ToolError::Io {
                command: command.clone(),
                source,
            })?;
        let Some(out) = waited else {
            for pid in handle.pids() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = handle.kill();
            return Err(ToolError::Timeout {
                command,
                after: self.timeout,
                tail: String::new(),
            });
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(ToolError::Failed {
                command,
                code: out.status.code().unwrap_or(-1),
                tail: tail(&format!("{stderr}\n{stdout}"), 20),
            });
        }
        Ok(CmdOutput {
            stdout,
            stderr,
            duration: started.elapsed(),
        })
    }
}

/// How long past its timeout [`Cmd::run`] waits for a command's blocking thread before giving up on it.
const OUTER_GRACE: Duration = Duration::from_secs(15);

/// Kills the recorded process groups unless disarmed (the command finished normally).
struct KillOnDrop {
    pids: Arc<Mutex<Vec<u32>>>,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(pids) = self.pids.lock() {
            for pid in pids.iter() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Looks `program` up on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_output_and_exit_codes() {
        let out = Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2"])
            .run()
            .await
            .expect("runs");
        assert_eq!(out.stdout.trim(), "out");
        assert_eq!(out.stderr.trim(), "err");
        let e = Cmd::new("sh")
            .args(["-c", "echo token: s3cret >&2; exit 7"])
            .run()
            .await
            .expect_err("fails");
        match e {
            ToolError::Failed { code, tail, .. } => {
                assert_eq!(code, 7);
                assert!(!tail.contains("s3cret"), "{tail}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let marker = tempfile::NamedTempFile::new().expect("tmp");
        let script = format!("(sleep 3; echo late > {}) & sleep 30", marker.path().display());
        let started = Instant::now();
        let e = Cmd::new("sh")
            .args(["-c", &script])
            .timeout(Duration::from_millis(300))
            .run()
            .await
            .expect_err("times out");
        assert!(matches!(e, ToolError::Timeout { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(3500));
        assert_eq!(
            std::fs::read_to_string(marker.path()).expect("read"),
            "",
            "grandchild survived the timeout"
        );
    }

    #[tokio::test]
    async fn a_dropped_run_kills_its_process() {
        let marker = tempfile::NamedTempFile::new().expect("tmp");
        let script = format!("sleep 2; echo late > {}", marker.path().display());
        let fut = Cmd::new("sh")
            .args(["-c", &script])
            .timeout(Duration::from_secs(30))
            .run();
        let _ = tokio::time::timeout(Duration::from_millis(300), fut).await;
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(
            std::fs::read_to_string(marker.path()).expect("read"),
            "",
            "the process outlived its dropped future"
        );
    }

    #[tokio::test]
    async fn missing_program_is_not_found() {
        let e = Cmd::new("meshconf-no-such-tool")
            .run()
            .await
            .expect_err("missing");
        assert!(matches!(e, ToolError::NotFound { .. }));
    }

    #[test]
    fn stdin_is_fed() {
        let out = Cmd::new("cat").stdin("hello").run_blocking().expect("cat");
        assert_eq!(out.stdout, "hello");
    }
}
