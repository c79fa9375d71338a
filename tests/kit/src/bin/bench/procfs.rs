//! Memory and CPU figures of a process, read from `/proc/<pid>/status` and `/proc/<pid>/stat`.

use std::fmt;
use std::process::Command;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Peak resident set size so far (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// Current resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

/// Why a process could not be read.
#[derive(Debug)]
pub enum ProcError {
    /// The `/proc` file could not be read (the process has gone, or no `/proc`).
    Io(std::io::Error),
    /// The file did not have the expected shape; names the missing part.
    Malformed(&'static str),
}

impl fmt::Display for ProcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcError::Io(e) => write!(f, "cannot read /proc: {e}"),
            ProcError::Malformed(what) => write!(f, "unexpected /proc format: no {what}"),
        }
    }
}

impl std::error::Error for ProcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcError::Io(e) => Some(e),
            ProcError::Malformed(_) => None,
        }
    }
}

impl From<std::io::Error> for ProcError {
    fn from(e: std::io::Error) -> ProcError {
        ProcError::Io(e)
    }
}

/// Reads process `pid` (`"self"` for the benchmark itself).
pub fn sample(pid: &str) -> Result<Sample, ProcError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(Sample {
        hwm_kib: status_kib(&status, "VmHWM").ok_or(ProcError::Malformed("VmHWM"))?,
        rss_kib: status_kib(&status, "VmRSS").ok_or(ProcError::Malformed("VmRSS"))?,
        cpu_ticks: stat_cpu_ticks(&stat).ok_or(ProcError::Malformed("utime/stime"))?,
    })
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `utime + stime` (fields 14 and 15) of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so counting starts after its last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so field n is index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked (Linux's usual value).
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_kibibytes() {
        let s = "Name:\tacrpull\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(status_kib(s, "VmHWM"), Some(5120));
        assert_eq!(status_kib(s, "VmRSS"), Some(4096));
        assert_eq!(status_kib(s, "VmSwap"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_a_command_name_with_spaces() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 1 1 1";
        assert_eq!(stat_cpu_ticks(stat), Some(12));
        assert_eq!(stat_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample("self").unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib, "{s:?}");
    }
}
