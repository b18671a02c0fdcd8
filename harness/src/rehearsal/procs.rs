//! Local processes the rehearsal starts where pods cannot run. Each runs in its own process group with output in
//! a log file, its PID recorded in the run directory, and is stopped (TERM, then KILL) by cleanup.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A supervised local process.
#[derive(Debug)]
pub struct Supervised {
    /// Label, e.g. `istiod-cluster1`.
    pub name: String,
    /// Log file with stdout and stderr.
    pub log: PathBuf,
    child: Child,
}

impl Supervised {
    /// Starts `program` with `args` and `env` in `cwd`, logging to `log`, in a new process group.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        cwd: &Path,
        log: &Path,
    ) -> std::io::Result<Self> {
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        let pids = cwd.parent().unwrap_or(cwd).join("pids");
        let _ = std::fs::create_dir_all(&pids);
        let _ = super::pidfile::record(&pids.join(name), child.id(), program);
        Ok(Self {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the process group: SIGTERM, then SIGKILL after `grace`. Returns whether it is gone.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let pgid = Pid::from_raw(self.child.id() as i32);
        if !self.running() {
            let _ = killpg(pgid, Signal::SIGKILL);
            return true;
        }
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.running() {
                let _ = killpg(pgid, Signal::SIGKILL);
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        true
    }

    /// The last `n` lines of the log (for failure reports).
    pub fn log_tail(&self, n: usize) -> String {
        crate::tools::tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), n)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.running() {
            self.stop(Duration::from_secs(2));
        }
    }
}

/// Whether a TCP port on 127.0.0.1 is free to listen on.
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether anything is listening on 127.0.0.1:`port`.
pub fn port_listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_kills_the_group_and_logs_are_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let work = dir.path().join("w");
        std::fs::create_dir_all(&work).expect("mkdir");
        let mut p = Supervised::spawn(
            "sleeper",
            Path::new("/bin/sh"),
            &["-c".into(), "echo started; sleep 60 & wait".into()],
            &[],
            &work,
            &work.join("log"),
        )
        .expect("spawn");
        std::thread::sleep(Duration::from_millis(200));
        assert!(p.running());
        assert!(dir.path().join("pids/sleeper").is_file());
        assert!(p.stop(Duration::from_secs(2)));
        assert!(!p.running());
        assert!(p.log_tail(5).contains("started"));
    }
}
