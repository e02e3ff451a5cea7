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
