//! Child processes that never outlive the local cloud.

use std::process::Stdio;

/// Spawns `cmd` with piped output, killed when its handle is dropped and,
/// on Linux, when the thread that started it exits (`PR_SET_PDEATHSIG`), so a
/// crashed or killed `prism` leaves no emulators or functions behind.
pub fn spawn_owned(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    die_with_parent(cmd);
    cmd.spawn()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only
    // prctl(2), which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut tokio::process::Command) {}

/// The memory a process and all its descendants hold, in bytes, as Lambda
/// counts a sandbox's (the ffmpeg a function runs counts against it): the
/// resident sets of the descendants now, plus the root's peak resident set
/// (`VmHWM`), so that a spike in the function itself between two looks is
/// not missed. `None` when the root has gone or /proc cannot tell.
#[cfg(target_os = "linux")]
pub fn tree_memory_bytes(root: u32) -> Option<u64> {
    /// `VmRSS:    1234 kB` and the like, in bytes.
    fn status_kib(pid: u32, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix(field))?;
        line.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kib| kib * 1024)
    }
    fn children(pid: u32) -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|list| list.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
            .collect()
    }
    let mut total = status_kib(root, "VmHWM:")?;
    let mut pending = children(root);
    // Bounded, in case /proc shows a process tree being rebuilt under it.
    let mut seen = 0;
    while let Some(pid) = pending.pop() {
        seen += 1;
        if seen > 1024 {
            break;
        }
        // A child that has exited since it was listed holds nothing.
        total += status_kib(pid, "VmRSS:").unwrap_or(0);
        pending.extend(children(pid));
    }
    Some(total)
}

#[cfg(not(target_os = "linux"))]
pub fn tree_memory_bytes(_root: u32) -> Option<u64> {
    None
}
