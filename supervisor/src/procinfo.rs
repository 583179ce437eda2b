//! Reading processes from `/proc`: memory (RSS, PSS) and process-group members. Used for
//! each lane's browser memory in `/api/status` and by the benchmarks.

use std::fs;

/// A `kB` field of a `/proc/<pid>/status`- or `smaps_rollup`-style file.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident set size in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    kb_field(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS:",
    )
}

/// Proportional set size in KiB: shared pages split among their sharers, so the PSS of
/// several processes adds up without double counting.
pub fn pss_kb(pid: u32) -> Option<u64> {
    kb_field(
        &fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?,
        "Pss:",
    )
}

/// The state letter and process group of `pid`, from `/proc/<pid>/stat`.
fn state_and_pgid(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised name: state ppid pgrp ...
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgid = fields.nth(1)?.parse().ok()?;
    Some((state, pgid))
}

/// Every live process in process group `group`. Zombies (dead, waiting for a parent —
/// or, in a container without an init, for nobody — to reap them) are not live.
pub fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            state_and_pgid(pid)
                .is_some_and(|(state, pgid)| pgid == group && !matches!(state, 'Z' | 'X'))
        })
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
        let (_, group) = state_and_pgid(me).unwrap();
        assert!(group_members(group).contains(&me));
    }
}
