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
    // SAFETY: the closure runs in the forked child before exec and makes one
    // prctl(2) call, which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| Ok(rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?));
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
    tree_bytes(root, true)
}

/// The memory `root` and its descendants hold now: every process's resident
/// set, the root's included (where the root has run other work before, its
/// high-water mark would count that work's peak).
#[cfg(target_os = "linux")]
pub fn tree_resident_bytes(root: u32) -> Option<u64> {
    tree_bytes(root, false)
}

#[cfg(target_os = "linux")]
fn tree_bytes(root: u32, root_peak: bool) -> Option<u64> {
    use procfs::process::Process;
    fn process(pid: u32) -> Option<Process> {
        Process::new(i32::try_from(pid).ok()?).ok()
    }
    fn children(process: &Process) -> Vec<u32> {
        let Ok(tasks) = process.tasks() else { return Vec::new() };
        tasks.flatten().filter_map(|task| task.children().ok()).flatten().collect()
    }
    let root = process(root)?;
    let status = root.status().ok()?;
    let mut total = if root_peak { status.vmhwm? } else { status.vmrss? } * 1024;
    let mut pending = children(&root);
    // Bounded, in case /proc shows a process tree being rebuilt under it.
    let mut seen = 0;
    while let Some(pid) = pending.pop() {
        seen += 1;
        if seen > 1024 {
            break;
        }
        // A child that has exited since it was listed holds nothing.
        let Some(child) = process(pid) else { continue };
        total += child.status().ok().and_then(|s| s.vmrss).unwrap_or(0) * 1024;
        pending.extend(children(&child));
    }
    Some(total)
}

#[cfg(not(target_os = "linux"))]
pub fn tree_memory_bytes(_root: u32) -> Option<u64> {
    None
}

#[cfg(not(target_os = "linux"))]
pub fn tree_resident_bytes(_root: u32) -> Option<u64> {
    None
}
