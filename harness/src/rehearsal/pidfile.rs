//! Pid files that prove whose process they name. A pid is reused once its process is gone, so `meshconf down`
//! signals a pid only when the process behind it still has the start time (kernel clock ticks since boot, from
//! `/proc/<pid>/stat`) and the program recorded when meshconf started it; anything else is left alone and named.

use std::path::Path;

/// What a pid file records: `<pid> <start time> <program>` on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidRecord {
    /// Process id (also the process group id: supervised processes lead their own group).
    pub pid: i32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub start: u64,
    /// The program's path as started.
    pub program: String,
}

/// Start time and executable name (`comm`, up to 15 bytes) of a live process, from `/proc/<pid>/stat`.
fn stat_of(pid: i32) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may itself hold spaces or parentheses: the fields follow the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); start time is field 22.
    let start = rest.get(19)?.parse().ok()?;
    Some((start, comm))
}

/// Writes the pid file for `pid`, just started from `program`.
pub fn record(path: &Path, pid: u32, program: &Path) -> std::io::Result<()> {
    let pid = pid as i32;
    let start = stat_of(pid).map(|(s, _)| s).unwrap_or(0);
    std::fs::write(path, format!("{pid} {start} {}\n", program.display()))
}

/// Reads a pid file.
pub fn read(path: &Path) -> Result<PidRecord, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut it = text.trim().splitn(3, ' ');
    let pid = it.next().and_then(|p| p.parse().ok());
    let start = it.next().and_then(|s| s.parse().ok());
    let program = it.next().map(str::to_string);
    match (pid, start, program) {
        (Some(pid), Some(start), Some(program)) if start > 0 => Ok(PidRecord { pid, start, program }),
        _ => Err(format!(
            "{}: not a pid file meshconf wrote (`<pid> <start time> <program>`): {:?}",
            path.display(),
            text.trim()
        )),
    }
}

/// Whether the process `rec` names is still the one meshconf started: same start time, same program name.
/// `Err` says why not (gone, or another process under a reused pid).
pub fn still_ours(rec: &PidRecord) -> Result<(), String> {
    let Some((start, comm)) = stat_of(rec.pid) else {
        return Err(format!("pid {} is gone", rec.pid));
    };
    let base = Path::new(&rec.program)
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    // The kernel keeps the first 15 bytes of the executable's name.
    let want: String = base.chars().take(15).collect();
    if start != rec.start || comm != want {
        return Err(format!(
            "pid {} is now another process ({comm}, started at tick {start}; meshconf started {want} at tick {})",
            rec.pid, rec.start
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_child_is_ours_and_a_reaped_one_or_a_reused_pid_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sleep = Path::new("/bin/sleep");
        let mut child = std::process::Command::new(sleep)
            .arg("30")
            .spawn()
            .expect("sleep");
        let f = dir.path().join("sleeper");
        record(&f, child.id(), sleep).expect("record");
        let rec = read(&f).expect("read");
        assert_eq!(rec.pid, child.id() as i32);
        still_ours(&rec).expect("the live child is ours");

        // Same pid, another start time: what a reused pid looks like.
        let reused = PidRecord {
            start: rec.start + 1,
            ..rec.clone()
        };
        assert!(
            still_ours(&reused)
                .expect_err("reused")
                .contains("another process")
        );
        // Same pid and start, another program.
        let other = PidRecord {
            program: "/usr/bin/pilot-discovery".into(),
            ..rec.clone()
        };
        assert!(still_ours(&other).is_err());

        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(still_ours(&rec).expect_err("gone").contains("gone"));
    }

    #[test]
    fn a_bare_pid_proves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("old");
        std::fs::write(&f, format!("{}\n", std::process::id())).expect("write");
        assert!(
            read(&f)
                .expect_err("bare pid")
                .contains("not a pid file meshconf wrote")
        );
    }
}
