//! A function's CPU share as Lambda gives it: in proportion to its memory
//! size, one vCPU at 1,769 MB (six at 10,240 MB). Each function gets a
//! cgroup of the v1 `cpu` controller whose CFS quota is that share of a
//! CPU; its instances' processes, and whatever they start (ffmpeg), run in
//! it. Needs root and a mounted `cpu` controller; off unless asked for
//! (`prism up --cpu-by-memory`), as it makes the local cloud slower on
//! purpose: local timings and timeouts then mean what they would on Lambda.

use std::io;
use std::path::{Path, PathBuf};

/// Lambda's memory per vCPU.
const MB_PER_VCPU: u64 = 1769;
/// The CFS period; quotas are in the same microseconds.
const PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel takes.
const MIN_QUOTA_US: u64 = 1000;
const CONTROLLER: &str = "/sys/fs/cgroup/cpu";

/// The CFS quota per period for a function of `memory_mb`.
pub fn quota_us(memory_mb: u64) -> u64 {
    (memory_mb * PERIOD_US / MB_PER_VCPU).max(MIN_QUOTA_US)
}

/// One cloud's cgroups, `…/cpu/prism-{pid}/{function}`, removed when dropped.
#[derive(Debug)]
pub struct CpuGroups {
    root: PathBuf,
    controller: PathBuf,
}

impl CpuGroups {
    /// The cloud's parent cgroup; an error when the controller is not there
    /// or not writable (not root).
    pub fn create() -> io::Result<Self> {
        Self::create_in(Path::new(CONTROLLER))
    }

    fn create_in(controller: &Path) -> io::Result<Self> {
        let root = controller.join(format!("prism-{}", std::process::id()));
        std::fs::create_dir_all(&root)?;
        Ok(Self { root, controller: controller.to_owned() })
    }

    /// Puts `pid` into `function`'s cgroup, made with its quota if new.
    pub fn limit(&self, function: &str, memory_mb: u64, pid: u32) -> io::Result<()> {
        let group = self.root.join(function);
        if !group.is_dir() {
            std::fs::create_dir_all(&group)?;
            std::fs::write(group.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
            std::fs::write(group.join("cpu.cfs_quota_us"), quota_us(memory_mb).to_string())?;
        }
        std::fs::write(group.join("cgroup.procs"), pid.to_string())
    }
}

impl Drop for CpuGroups {
    fn drop(&mut self) {
        // A cgroup can be removed only once empty: processes still on their
        // way out are moved back to the controller's root group first.
        // Best effort: what is left is an empty folder in a virtual filesystem.
        if let Ok(groups) = std::fs::read_dir(&self.root) {
            for group in groups.flatten().map(|g| g.path()) {
                let pids = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
                for pid in pids.lines() {
                    let _ = std::fs::write(self.controller.join("cgroup.procs"), pid);
                }
                let _ = std::fs::remove_dir(&group);
            }
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_its_memory_over_lambdas_1769_mb_per_vcpu() {
        assert_eq!(quota_us(1769), 100_000);
        assert_eq!(quota_us(3538), 200_000);
        assert_eq!(quota_us(256), 14_471);
        assert_eq!(quota_us(10), MIN_QUOTA_US);
    }
}
