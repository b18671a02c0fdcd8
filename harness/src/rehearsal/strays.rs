//! Components a `kwokctl create` left behind when it was killed mid-way: kwokctl starts a component, then writes
//! its pid file; killed in between, the file is empty and `kwokctl delete` fails to parse it ("parse pid file"),
//! leaving the component running. These are found by what proves them the run's own, never by name: a process
//! whose working directory is the cluster's directory inside this run's directory (kwokctl starts every component
//! there), or whose command line names that directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The processes whose working directory is `workdir` or whose command line names it.
pub fn processes_in(workdir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let needle = workdir.display().to_string();
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let cwd = std::fs::read_link(proc.join("cwd")).ok();
            let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
            // The directory itself or a path below it, never a sibling that only starts the same (cluster20).
            let names_it = String::from_utf8_lossy(&cmdline)
                .split(['\0', '=', ' '])
                .any(|arg| {
                    arg == needle
                        || arg
                            .strip_prefix(&needle)
                            .is_some_and(|rest| rest.starts_with('/'))
                });
            cwd.as_deref() == Some(workdir) || names_it
        })
        .collect()
}

/// Pid files of `workdir/pids` that name no process (empty or not a number): what `kwokctl delete` cannot parse.
pub fn unreadable_pid_files(workdir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(workdir.join("pids"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p)
                .map(|t| t.trim().parse::<i32>().is_err())
                .unwrap_or(false)
        })
        .collect()
}

/// Kills the processes [`processes_in`] finds for `workdir` and removes the pid files no process can be read from,
/// so `kwokctl delete` can run again; waits up to `grace` for them to be gone. Returns what it did, one line each.
pub fn clear(workdir: &Path, grace: Duration) -> Vec<String> {
    let mut done = Vec::new();
    let pids = processes_in(workdir);
    for pid in &pids {
        if kill(Pid::from_raw(*pid), Signal::SIGKILL).is_ok() {
            done.push(format!("killed pid {pid} (running in {})", workdir.display()));
        }
    }
    // Gone: no /proc entry, or a zombie waiting for its parent to reap it.
    let alive = |p: &i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| {
                s.rsplit_once(") ")
                    .map(|(_, rest)| !rest.starts_with('Z'))
                    .unwrap_or(true)
            })
            .unwrap_or(false)
    };
    let until = Instant::now() + grace;
    while Instant::now() < until && pids.iter().any(alive) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for f in unreadable_pid_files(workdir) {
        if std::fs::remove_file(&f).is_ok() {
            done.push(format!("removed the unreadable pid file {}", f.display()));
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_started_in_the_directory_is_found_and_killed_and_an_empty_pid_file_removed() {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("clusters/cluster2");
        std::fs::create_dir_all(work.join("pids")).unwrap();
        std::fs::write(work.join("pids/etcd.pid"), "").unwrap();
        std::fs::write(work.join("pids/kube-apiserver.pid"), "12345").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&work)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(processes_in(&work).contains(&pid));
        // Another directory's process is not this cluster's, nor is a sibling's whose name only starts the same.
        assert!(!processes_in(&d.path().join("clusters/cluster1")).contains(&pid));
        // A process that only names a path: found for that directory, not for one whose name is its prefix.
        let sibling = d.path().join("clusters/cluster2x");
        let mut named = std::process::Command::new("sh")
            .args(["-c", "sleep 60"])
            .arg(format!("--data-dir={}/etcd", sibling.display()))
            .current_dir(d.path())
            .spawn()
            .unwrap();
        let npid = named.id() as i32;
        assert!(processes_in(&sibling).contains(&npid));
        assert!(!processes_in(&work).contains(&npid));
        let _ = named.kill();
        let _ = named.wait();
        let done = clear(&work, Duration::from_millis(300));
        assert!(
            done.iter().any(|l| l.contains(&format!("killed pid {pid}"))),
            "{done:?}"
        );
        assert!(child.wait().is_ok());
        assert!(!work.join("pids/etcd.pid").exists());
        assert!(
            work.join("pids/kube-apiserver.pid").exists(),
            "a readable pid file is kwokctl's to handle"
        );
    }
}
