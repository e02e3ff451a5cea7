//! Child processes that never outlive the local cloud.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

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

/// Starts `cmd`'s process at nice `nice`, inherited by every thread and
/// process it starts. A priority above the default needs root
/// (`CAP_SYS_NICE`); without it the process runs at the default, which
/// [`nice_of`] tells after the start.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn with_nice(cmd: &mut tokio::process::Command, nice: i32) {
    // SAFETY: the closure runs in the forked child before exec and makes one
    // setpriority(2) call, which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            // Refused, the process still runs, at the default priority: not a reason to fail its start.
            let _ = rustix::process::setpriority_process(None, nice);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn with_nice(_cmd: &mut tokio::process::Command, _nice: i32) {}

/// The nice value a running process has.
pub fn nice_of(pid: u32) -> std::io::Result<i32> {
    let pid = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw).ok_or(std::io::ErrorKind::InvalidInput)?;
    Ok(rustix::process::getpriority_process(Some(pid))?)
}

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

/// The process `pid`, if it is still there.
#[cfg(target_os = "linux")]
fn process(pid: u32) -> Option<procfs::process::Process> {
    procfs::process::Process::new(i32::try_from(pid).ok()?).ok()
}

/// The processes `process` started that are still there: listed by each of
/// its threads, since the thread that starts a child is its parent.
#[cfg(target_os = "linux")]
fn children(process: &procfs::process::Process) -> Vec<u32> {
    let Ok(tasks) = process.tasks() else { return Vec::new() };
    tasks.flatten().filter_map(|task| task.children().ok()).flatten().collect()
}

#[cfg(not(target_os = "linux"))]
pub fn tree_memory_bytes(_root: u32) -> Option<u64> {
    None
}

#[cfg(not(target_os = "linux"))]
pub fn tree_resident_bytes(_root: u32) -> Option<u64> {
    None
}

/// The part of the local cloud a process belongs to, for [`CpuTimes`].
const OWN_PART: &str = "prism";

/// CPU time (user and system) used so far by this process and every process
/// under it, each counted to its part: this process to `prism`, a named
/// child (an emulator) and everything under it to that name, any other
/// child (a function's instance) and what it starts (ffmpeg) to its
/// program's file name. Two readings tell what the work between them cost
/// each part: [`CpuTimes::since`].
#[derive(Debug, Clone, Default)]
pub struct CpuTimes {
    /// By pid: its part and its CPU time so far.
    processes: BTreeMap<u32, (String, Duration)>,
}

impl CpuTimes {
    /// Reads this process's tree; `named` names children by pid.
    #[cfg(target_os = "linux")]
    pub fn read(named: &[(&str, u32)]) -> Self {
        use procfs::process::Process;
        let ticks_per_second = procfs::ticks_per_second().max(1) as f64;
        // A process's own time, plus that of the children it has reaped, except
        // for this one: it reaps functions' instances, whose time is their part's.
        let cpu = |process: &Process, with_reaped: bool| -> Option<Duration> {
            let stat = process.stat().ok()?;
            let reaped = if with_reaped { (stat.cutime + stat.cstime).max(0).unsigned_abs() } else { 0 };
            Some(Duration::from_secs_f64((stat.utime + stat.stime + reaped) as f64 / ticks_per_second))
        };
        let mut processes = BTreeMap::new();
        let Ok(own) = Process::myself() else { return Self { processes } };
        if let Some(time) = cpu(&own, false) {
            processes.insert(std::process::id(), (OWN_PART.to_owned(), time));
        }
        let part_of = |pid: u32, process: &Process| -> String {
            named.iter().find(|(_, named)| *named == pid).map(|(name, _)| (*name).to_owned()).unwrap_or_else(|| {
                let program = process.exe().ok().and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()));
                program.unwrap_or_else(|| format!("pid {pid}"))
            })
        };
        let mut pending: Vec<(u32, Option<String>)> = children(&own).into_iter().map(|pid| (pid, None)).collect();
        while let Some((pid, part)) = pending.pop() {
            // Bounded, in case /proc shows a process tree being rebuilt under it.
            if processes.len() > 4096 {
                break;
            }
            // A child that has exited since it was listed has no time left to read.
            let Some(process) = process(pid) else { continue };
            let part = part.unwrap_or_else(|| part_of(pid, &process));
            if let Some(time) = cpu(&process, true) {
                pending.extend(children(&process).into_iter().map(|child| (child, Some(part.clone()))));
                processes.insert(pid, (part, time));
            }
        }
        Self { processes }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read(_named: &[(&str, u32)]) -> Self {
        Self::default()
    }

    /// What each part used between `earlier` and this reading. A process that
    /// started in between counts whole; one that ended in between (an
    /// instance stopped) is missing its time after `earlier`, so the parts'
    /// sum can fall short, never over.
    pub fn since(&self, earlier: &Self) -> CpuUse {
        let mut by_part: BTreeMap<String, Duration> = BTreeMap::new();
        for (pid, (part, time)) in &self.processes {
            let before = earlier.processes.get(pid).filter(|(was, _)| was == part).map_or(Duration::ZERO, |(_, time)| *time);
            *by_part.entry(part.clone()).or_default() += time.saturating_sub(before);
        }
        let ended = earlier.processes.keys().filter(|pid| !self.processes.contains_key(pid)).count();
        CpuUse { by_part, ended }
    }
}

/// The CPU time each part of the local cloud used over a stretch of work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuUse {
    pub by_part: BTreeMap<String, Duration>,
    /// Processes of the first reading gone by the second.
    pub ended: usize,
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use anyhow::Context as _;

    use super::*;

    fn reading(processes: &[(u32, &str, u64)]) -> CpuTimes {
        let processes = processes.iter().map(|(pid, part, ms)| (*pid, ((*part).to_owned(), Duration::from_millis(*ms)))).collect();
        CpuTimes { processes }
    }

    #[test]
    fn a_stretch_costs_each_part_what_its_processes_used_in_it_and_an_ended_process_is_counted_as_ended() {
        let earlier = reading(&[(1, "prism", 100), (2, "moto", 1_000), (3, "classify", 50), (4, "intake", 70)]);
        // 3 ended; 5 started; 4 is a new process that was given an old pid.
        let later = reading(&[(1, "prism", 150), (2, "moto", 1_800), (4, "api", 30), (5, "classify", 20)]);
        let used = later.since(&earlier);
        let ms = |part: &str| used.by_part.get(part).map(Duration::as_millis);
        assert_eq!((ms("prism"), ms("moto"), ms("classify"), ms("api"), ms("intake")), (Some(50), Some(800), Some(20), Some(30), None));
        assert_eq!(used.ended, 1);
    }

    #[tokio::test]
    async fn a_process_started_with_a_nice_value_runs_at_it_when_allowed() -> anyhow::Result<()> {
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("30").kill_on_drop(true);
        with_nice(&mut cmd, -5);
        let child = cmd.spawn()?;
        let nice = nice_of(child.id().context("running")?)?;
        // Only root may raise a priority; anyone else's child runs at the default.
        let expected = if rustix::process::geteuid().is_root() { -5 } else { 0 };
        assert_eq!(nice, expected);
        Ok(())
    }

    /// A named child that burns CPU is charged for it, under its name, and
    /// this process under its own.
    #[test]
    fn a_reading_charges_a_busy_child_to_its_name() -> anyhow::Result<()> {
        let mut busy =
            std::process::Command::new("sh").args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30"]).spawn()?;
        let before = CpuTimes::read(&[("busy", busy.id())]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let used = loop {
            std::thread::sleep(Duration::from_millis(200));
            let used = CpuTimes::read(&[("busy", busy.id())]).since(&before);
            if used.by_part.get("busy").is_some_and(|t| *t >= Duration::from_millis(100)) || std::time::Instant::now() > deadline {
                break used;
            }
        };
        busy.kill()?;
        busy.wait()?;
        assert!(used.by_part.get("busy").is_some_and(|t| *t >= Duration::from_millis(100)), "{used:?}");
        assert!(used.by_part.contains_key(OWN_PART), "{used:?}");
        Ok(())
    }
}
