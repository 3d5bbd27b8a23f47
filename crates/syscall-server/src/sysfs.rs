//! The sysfs/tracefs/debugfs files loaders read, answered from userbpf's
//! point of view instead of the kernel's (an ordinary user cannot read most
//! of them, and their kernel content describes kernel features userbpf does
//! not provide). Each answer becomes a sealed memfd so the caller gets a real
//! file descriptor and `read`/`lseek`/`fstat`/`fdopen` all behave.

use crate::abi::perf::USERBPF_UPROBE_PMU_TYPE;

/// What the server does with an `open` of `path`.
pub enum FileAnswer {
    /// Not ours: forward to libc.
    PassThrough,
    /// Serve this content.
    Synthesized(Vec<u8>),
    /// Fail with this errno (the file describes a kernel feature userbpf lacks).
    Missing(i32),
}

const TRACING_DIRS: [&str; 2] = ["/sys/kernel/debug/tracing", "/sys/kernel/tracing"];

/// True for the tracefs mount points, which loaders probe with `access()`.
pub fn is_tracing_dir(path: &str) -> bool {
    TRACING_DIRS
        .iter()
        .any(|d| path == *d || path.strip_suffix('/') == Some(d))
}

/// Decide how to answer an open of `path` with open `flags`.
pub fn answer_open(path: &str, flags: i32) -> FileAnswer {
    let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
    if writing && tracing_rest(path).is_some_and(|r| r == "kprobe_events" || r == "uprobe_events") {
        // bcc's fallback when the PMU is missing: create a tracefs probe.
        if tracing_rest(path) == Some("kprobe_events") {
            crate::report::unsupported(
                "kernel probes (kprobe:/kretprobe:)",
                "userbpf has no kernel probes, it traces user space only",
            );
        } else {
            crate::report::unsupported(
                "tracefs uprobe_events",
                "userbpf attaches uprobes through perf_event_open only",
            );
        }
        return FileAnswer::Missing(libc::ENOENT);
    }
    answer(path)
}

/// Decide how to answer a read of `path`.
pub fn answer(path: &str) -> FileAnswer {
    match path {
        "/sys/bus/event_source/devices/uprobe/type" => {
            FileAnswer::Synthesized(format!("{USERBPF_UPROBE_PMU_TYPE}\n").into_bytes())
        }
        "/sys/bus/event_source/devices/uprobe/format/retprobe" => {
            FileAnswer::Synthesized(b"config:0\n".to_vec())
        }
        "/sys/bus/event_source/devices/kprobe/type"
        | "/sys/bus/event_source/devices/kprobe/format/retprobe" => {
            FileAnswer::Missing(libc::ENOENT)
        }
        // bcc reads the kprobe blacklist before attaching kprobes; userbpf
        // has no kernel probes, so nothing in the kernel is blacklisted
        // (kprobe attachment itself is refused with a message).
        "/sys/kernel/debug/kprobes/blacklist" => FileAnswer::Synthesized(Vec::new()),
        "/sys/kernel/security/lockdown" => {
            FileAnswer::Synthesized(b"[none] integrity confidentiality\n".to_vec())
        }
        _ => tracing_file(path),
    }
}

/// Whether the loader was asked to list kernel probes: bpftrace's `-l`
/// (alone or in a cluster of short flags such as `-lv`) with no pattern of
/// user-space probes (`uprobe:`, `uretprobe:`, `usdt:`).
fn loader_lists_probes() -> bool {
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).skip(1).collect();
    let listing = args.iter().any(|a| {
        *a == b"--list"
            || (a.len() >= 2 && a[0] == b'-' && a[1] != b'-' && a[1..].iter().all(u8::is_ascii_alphabetic) && a.contains(&b'l'))
    });
    let user_space = args.iter().any(|a| [&b"uprobe"[..], b"uretprobe", b"usdt"].iter().any(|p| a.starts_with(p)));
    listing && !user_space
}

/// The part of `path` below a tracefs mount point.
fn tracing_rest(path: &str) -> Option<&str> {
    TRACING_DIRS
        .iter()
        .find_map(|d| path.strip_prefix(d)?.strip_prefix('/'))
}

fn tracing_file(path: &str) -> FileAnswer {
    let Some(rest) = tracing_rest(path) else {
        return FileAnswer::PassThrough;
    };
    match rest {
        // No kernel function can be traced: the list is empty. A loader
        // listing probes (`bpftrace -l 'kprobe:*'`) would print nothing and
        // succeed, so say why once.
        "available_filter_functions" | "available_events" => {
            if loader_lists_probes() {
                crate::report::once(
                    "listing kernel probes",
                    "userbpf: no kernel functions, tracepoints or events are listed: userbpf traces user space \
                     only (uprobe:, uretprobe:, usdt:); kprobe:, kfunc:/fentry: and tracepoint: probes cannot attach",
                );
            }
            FileAnswer::Synthesized(Vec::new())
        }
        // userbpf never creates tracefs probe events; loaders read these to
        // clean up stale entries.
        "uprobe_events" | "kprobe_events" => FileAnswer::Synthesized(Vec::new()),
        _ if rest.starts_with("events/kprobes/") => {
            crate::report::unsupported(
                "kernel probes (kprobe:/kretprobe:)",
                "userbpf has no kernel probes, it traces user space only",
            );
            FileAnswer::Missing(libc::ENOENT)
        }
        _ if rest.starts_with("events/") => {
            crate::report::unsupported(
                "kernel tracepoints (tracepoint:)",
                "userbpf traces user space only",
            );
            FileAnswer::Missing(libc::ENOENT)
        }
        _ => FileAnswer::Missing(libc::ENOENT),
    }
}

/// A memfd holding `content`, positioned at offset 0.
pub fn memfd_with(name: &std::ffi::CStr, content: &[u8]) -> Result<libc::c_int, i32> {
    // SAFETY: plain syscalls on a descriptor we own; the buffer is valid for
    // its length.
    unsafe {
        let fd = libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 {
            return Err(crate::report::errno());
        }
        let mut written = 0;
        while written < content.len() {
            let n = libc::write(
                fd,
                content[written..].as_ptr() as *const _,
                content.len() - written,
            );
            if n <= 0 {
                let e = crate::report::errno();
                crate::real::close(fd);
                return Err(e);
            }
            written += n as usize;
        }
        libc::lseek(fd, 0, libc::SEEK_SET);
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uprobe_pmu_files_are_synthesized() {
        match answer("/sys/bus/event_source/devices/uprobe/type") {
            FileAnswer::Synthesized(c) => {
                assert_eq!(c, format!("{USERBPF_UPROBE_PMU_TYPE}\n").into_bytes())
            }
            _ => panic!("uprobe type must be synthesized"),
        }
        assert!(
            matches!(answer("/sys/kernel/debug/tracing/uprobe_events"), FileAnswer::Synthesized(c) if c.is_empty())
        );
        assert!(matches!(
            answer("/sys/kernel/tracing/available_filter_functions"),
            FileAnswer::Synthesized(_)
        ));
    }

    #[test]
    fn unrelated_paths_pass_through() {
        assert!(matches!(
            answer("/sys/devices/system/cpu/possible"),
            FileAnswer::PassThrough
        ));
        assert!(matches!(answer("/tmp/app"), FileAnswer::PassThrough));
        assert!(matches!(
            answer("/sys/kernel/tracingx/uprobe_events"),
            FileAnswer::PassThrough
        ));
        assert!(matches!(
            answer("/sys/bus/event_source/devices/kprobe/type"),
            FileAnswer::Missing(libc::ENOENT)
        ));
    }

    #[test]
    fn tracefs_probe_creation_is_refused() {
        let kprobe_events = "/sys/kernel/debug/tracing/kprobe_events";
        assert!(matches!(
            answer_open(kprobe_events, libc::O_WRONLY | libc::O_APPEND),
            FileAnswer::Missing(libc::ENOENT)
        ));
        assert!(matches!(
            answer_open(kprobe_events, libc::O_RDONLY),
            FileAnswer::Synthesized(_)
        ));
    }
}
