//! Reading processes from `/proc` (through the `procfs` crate): memory (RSS, PSS),
//! liveness, CPU time and process-group members. Used for each lane's browser memory in
//! `/api/status`, by the tests and by the benchmarks.

use procfs::process::{all_processes, Process, Stat};

/// The process `pid`, if `/proc` still lists it.
fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kb(pid: u32) -> Option<u64> {
    process(pid)?.status().ok()?.vmrss
}

/// Proportional set size in KiB: shared pages split among their sharers, so the PSS of
/// several processes adds up without double counting (`Pss` of `smaps_rollup`).
pub fn pss_kb(pid: u32) -> Option<u64> {
    let rollup = process(pid)?.smaps_rollup().ok()?;
    // procfs gives the kernel's kB figures in bytes.
    let bytes = rollup
        .memory_map_rollup
        .0
        .first()?
        .extension
        .map
        .get("Pss")?;
    Some(bytes / 1024)
}

/// Live: neither a zombie (dead, waiting for a parent — or, in a container without an
/// init, for nobody — to reap it) nor dead.
fn live(stat: &Stat) -> bool {
    !matches!(stat.state, 'Z' | 'X')
}

/// True when the process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    process(pid)
        .and_then(|p| p.stat().ok())
        .is_some_and(|stat| live(&stat))
}

/// CPU time `pid` has used (utime + stime), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = process(pid)?.stat().ok()?;
    Some(stat.utime + stat.stime)
}

/// CPU time used by this process's threads named `name`, in clock ticks.
pub fn own_threads_cpu_ticks(name: &str) -> u64 {
    let Ok(tasks) = Process::myself().and_then(|me| me.tasks()) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| task.stat().ok())
        .filter(|stat| stat.comm == name)
        .map(|stat| stat.utime + stat.stime)
        .sum()
}

/// The `stat` of every process `/proc` lists (those that vanish meanwhile are skipped).
pub fn all_stats() -> Vec<Stat> {
    let Ok(processes) = all_processes() else {
        return Vec::new();
    };
    processes.flatten().filter_map(|p| p.stat().ok()).collect()
}

/// Every live process in process group `group`.
pub fn group_members(group: u32) -> Vec<u32> {
    all_stats()
        .into_iter()
        .filter(|stat| u32::try_from(stat.pgrp).ok() == Some(group) && live(stat))
        .filter_map(|stat| u32::try_from(stat.pid).ok())
        .collect()
}

/// PSS in KiB of a worker's browser: every process in the worker's group but the worker.
pub fn browser_pss_kb(worker_pid: u32) -> Option<u64> {
    let members: Vec<u32> = group_members(worker_pid)
        .into_iter()
        .filter(|&p| p != worker_pid)
        .collect();
    if members.is_empty() {
        return None;
    }
    Some(members.into_iter().filter_map(pss_kb).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kb(me).unwrap() > 0);
        assert!(pss_kb(me).unwrap() > 0);
        assert!(is_alive(me));
        let group = nix::unistd::getpgrp().as_raw() as u32;
        assert!(group_members(group).contains(&me));
    }
}
