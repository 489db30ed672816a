//! CPU time and memory of another process, from /proc.

use std::fs;

/// CPU seconds the process has used so far: the sum of its threads' time on a CPU, in
/// nanoseconds (`/proc/PID/task/*/schedstat`), so that a window of a few hundredths of a second
/// is measured, not rounded to the 10 ms ticks of `/proc/PID/stat` (which this falls back to).
/// A thread that exits inside a window takes its time with it; the servers measured keep
/// theirs.
pub fn cpu_seconds(pid: u32) -> f64 {
    threads_cpu_seconds(pid).unwrap_or_else(|| stat_cpu_seconds(pid))
}

fn threads_cpu_seconds(pid: u32) -> Option<f64> {
    let threads = threads(pid)?;
    Some(threads.iter().map(|(_, s)| s).sum())
}

/// CPU seconds of each of the process's threads whose name starts with `prefix`, by name
/// (Huddle's media workers are `media-0`, `media-1`, …); empty if it has none.
pub fn named_threads_cpu_seconds(pid: u32, prefix: &str) -> Vec<(String, f64)> {
    let mut named: Vec<_> = threads(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Each thread's name and CPU seconds, from its `comm` and `schedstat`.
fn threads(pid: u32) -> Option<Vec<(String, f64)>> {
    let mut threads = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path();
        let (Ok(schedstat), Ok(comm)) = (
            fs::read_to_string(path.join("schedstat")),
            fs::read_to_string(path.join("comm")),
        ) else {
            continue; // exited since the listing
        };
        let nanos = schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
        threads.push((comm.trim_end().to_owned(), nanos as f64 / 1e9));
    }
    Some(threads)
}

/// User + system CPU seconds from `/proc/PID/stat`, in whole ticks.
fn stat_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux this runs on; /proc/self/auxv would tell, at some length.
    100.0
}
