//! Reading what `/proc` says about another process: its memory mappings, its
//! threads, what each thread is blocked in, who traces it, its environment.
//! Parsing only; nothing here stops or changes the process.

use std::io;
use std::path::PathBuf;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// Offset in the mapped file.
    pub offset: u64,
    /// Device of the mapped file, as `st_dev` encodes it (0 for anonymous memory).
    pub dev: u64,
    /// Inode of the mapped file (0 for anonymous memory).
    pub inode: u64,
    /// The mapped file, or a pseudo name (`[stack]`, `[vdso]`), or empty for anonymous memory.
    pub path: String,
}

impl Mapping {
    pub fn is_executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }

    /// The mapped file's path without the kernel's " (deleted)" suffix, if this maps a file.
    pub fn file(&self) -> Option<&str> {
        if !self.path.starts_with('/') {
            return None;
        }
        Some(self.path.strip_suffix(" (deleted)").unwrap_or(&self.path))
    }

    /// The file name of the mapped file (`libc.so.6`).
    pub fn file_name(&self) -> Option<&str> {
        self.file().and_then(|f| f.rsplit('/').next())
    }
}

/// Parses the text of a `/proc/PID/maps` file.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    // start-end perms offset dev inode [path]; the path may contain spaces.
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let trimmed = rest.trim_start();
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (word, tail) = trimmed.split_at(end);
        rest = tail;
        if word.is_empty() {
            None
        } else {
            Some(word)
        }
    };
    let range = field()?;
    let perms = field()?.to_string();
    let offset = u64::from_str_radix(field()?, 16).ok()?;
    let (major, minor) = field()?.split_once(':')?;
    let inode = field()?.parse().ok()?;
    let path = rest.trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms,
        offset,
        dev: libc::makedev(u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?),
        inode,
        path,
    })
}

/// The `/proc` directory through which the memory, mappings and root of
/// process `pid` are read: `/proc/PID`, or `/proc/PID/task/TID` of a live
/// thread when the main thread has exited (`pthread_exit`: its own entries
/// then show no memory and no root while the other threads run on).
pub fn live_dir(pid: i32) -> PathBuf {
    if !matches!(thread_state(pid, pid), Some('Z' | 'X')) {
        return PathBuf::from(format!("/proc/{pid}"));
    }
    let live = thread_ids(pid)
        .unwrap_or_default()
        .into_iter()
        .find(|&tid| !matches!(thread_state(pid, tid), Some('Z' | 'X') | None));
    match live {
        Some(tid) => PathBuf::from(format!("/proc/{pid}/task/{tid}")),
        None => PathBuf::from(format!("/proc/{pid}")),
    }
}

/// The mappings of process `pid`.
pub fn read_maps(pid: i32) -> io::Result<Vec<Mapping>> {
    Ok(parse_maps(&std::fs::read_to_string(live_dir(pid).join("maps"))?))
}

/// Ids of all threads of process `pid`, the main thread first.
pub fn thread_ids(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_by_key(|&tid| (tid != pid, tid));
    Ok(tids)
}

/// What a thread is doing, from `/proc/PID/task/TID/syscall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadActivity {
    /// Running (or runnable) on a CPU.
    Running,
    /// Blocked in the kernel, but not in a system call (a page fault, a stop).
    BlockedOutsideSyscall,
    /// Blocked in system call `nr`, at user address `pc`.
    InSyscall { nr: i64, pc: u64 },
}

/// Parses the text of `/proc/PID/task/TID/syscall`.
pub fn parse_syscall_file(text: &str) -> Option<ThreadActivity> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.first().copied()? {
        "running" => Some(ThreadActivity::Running),
        "-1" => Some(ThreadActivity::BlockedOutsideSyscall),
        nr => {
            let nr: i64 = nr.parse().ok()?;
            let pc = words.last().and_then(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok())?;
            Some(ThreadActivity::InSyscall { nr, pc })
        }
    }
}

/// What thread `tid` of `pid` is doing right now (None if unreadable).
pub fn thread_activity(pid: i32, tid: i32) -> Option<ThreadActivity> {
    parse_syscall_file(&std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?)
}

/// The one-letter scheduler state of thread `tid` of `pid` (`R`, `S`, `D`,
/// `T`, `t`, `Z`, …), from `/proc/PID/task/TID/stat`.
pub fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces or ')'.
    stat.rsplit_once(") ")?.1.chars().next()
}

/// A `Key:\tvalue` field of `/proc/PID/status`.
pub fn status_field(pid: i32, key: &str) -> io::Result<Option<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim().to_string())
    }))
}

/// The pid process `pid` sees itself as (the last field of `NSpid`, its
/// innermost pid namespace): how its agent records it in the registry.
pub fn own_pid(pid: i32) -> i32 {
    status_field(pid, "NSpid")
        .ok()
        .flatten()
        .and_then(|v| v.split_whitespace().last()?.parse().ok())
        .unwrap_or(pid)
}

/// The process's command name (`/proc/PID/comm`), or "?" when unreadable.
pub fn command_name(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// Ids of every process visible in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether process `pid` exists (as seen from our pid namespace).
pub fn process_exists(pid: i32) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The value of environment variable `name` in process `pid`, if set.
pub fn environment_variable(pid: i32, name: &str) -> io::Result<Option<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))?;
    let prefix = format!("{name}=");
    Ok(raw
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned()))
}

/// A path as the process `pid` sees it (through its root, which differs in
/// another mount namespace or chroot).
pub fn path_in_process_root(pid: i32, path: &str) -> PathBuf {
    let mut root = live_dir(pid).join("root").into_os_string();
    root.push(path);
    PathBuf::from(root)
}

/// The Yama `ptrace_scope` setting, or None when Yama is not in the kernel.
pub fn yama_ptrace_scope() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines_with_and_without_paths() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /usr/bin/my app
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1000000000-7f1000028000 r-xp 00028000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[0].path, "/usr/bin/my app");
        assert_eq!(maps[0].file_name(), Some("my app"));
        assert_eq!(maps[1].path, "");
        assert_eq!(maps[1].file(), None);
        assert_eq!(maps[2].offset, 0x28000);
        assert_eq!((maps[2].dev, maps[2].inode), (libc::makedev(8, 1), 99));
        assert!(maps[2].is_executable());
        assert_eq!(maps[2].file(), Some("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert_eq!(maps[3].path, "[stack]");
        assert_eq!((maps[3].start, maps[3].end), (0x7ffd00000000, 0x7ffd00021000));
    }

    #[test]
    fn parses_syscall_file_states() {
        assert_eq!(parse_syscall_file("running\n"), Some(ThreadActivity::Running));
        assert_eq!(parse_syscall_file("-1 0x7ffc 0x7f00\n"), Some(ThreadActivity::BlockedOutsideSyscall));
        assert_eq!(
            parse_syscall_file("230 0x0 0x0 0x7ffd 0x0 0x0 0x0 0x7ffd1000 0x7f12345678\n"),
            Some(ThreadActivity::InSyscall { nr: 230, pc: 0x7f12345678 })
        );
        assert_eq!(parse_syscall_file(""), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        // SAFETY: gettid has no preconditions.
        let this_thread = unsafe { libc::gettid() };
        assert_eq!(thread_state(me, this_thread), Some('R'), "the thread reading its own state is running");
        assert!(process_exists(me));
        assert_eq!(thread_ids(me).unwrap()[0], me);
        assert!(read_maps(me).unwrap().iter().any(|m| m.path == "[stack]"));
        assert!(status_field(me, "TracerPid").unwrap().is_some());
    }
}
