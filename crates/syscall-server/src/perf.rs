//! `syscall(__NR_perf_event_open, …)` and the perf ioctls.
//!
//! Three kinds of perf events are userbpf objects:
//! - the uprobe PMU (type [`USERBPF_UPROBE_PMU_TYPE`], advertised in the
//!   synthesized sysfs): an attachment record in the registry, created
//!   disabled; `PERF_EVENT_IOC_SET_BPF` binds the program, `…_ENABLE` arms it
//!   in every traced process (the agents watch the registry);
//! - `PERF_COUNT_SW_BPF_OUTPUT` on one CPU: a perf ring in shared memory. The
//!   fd *is* the ring's file, so the loader's `mmap(fd)` maps the
//!   kernel-layout ring directly;
//! - `PERF_COUNT_SW_CPU_CLOCK`: `interval:` is a timer in the loader that
//!   runs the bound program, `profile:` a registry link that makes every
//!   traced app sample its own threads ([`crate::timer`]).
//!
//! Everything else (kprobes, tracepoints, hardware counters, breakpoints) is
//! a kernel feature: refused with the kernel's errno and a one-line message.

use std::ffi::c_long;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::Arc;

use crate::abi::perf::*;
use crate::backend;
use crate::objects::{Object, OutputEvent, UprobeEvent, TABLE};
use crate::report;
use shm_maps::LinkKind;

/// Data pages of each BPF_OUTPUT ring by default: bpftrace's default.
pub const OUTPUT_RING_PAGES: u32 = 64;

/// Data pages for a new BPF_OUTPUT ring. The ring (and so its size) must
/// exist when `perf_event_open` returns, before the loader says how much it
/// maps, so the server follows bpftrace's own knob `BPFTRACE_PERF_RB_PAGES`
/// (a power of two, like the kernel requires); an `mmap` of another size
/// resizes the ring ([`prepare_ring_mmap`]).
fn output_ring_pages() -> u32 {
    std::env::var("BPFTRACE_PERF_RB_PAGES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| n.is_power_of_two())
        .unwrap_or(OUTPUT_RING_PAGES)
}

/// `mmap(fd)` of a ring: the length must be the ring's (header + data).
///
/// The ring exists before the loader says how large it maps it. bpftrace
/// maps what `BPFTRACE_PERF_RB_PAGES` says; libbpf's `perf_buffer__new`
/// maps its own page count (libbpf-tools use 16 or 64 pages). When the
/// length asks for another power-of-two number of data pages, the ring is
/// replaced by one of that size under the same fd number (`dup2`), which is
/// safe because nothing but this fd refers to it yet: a ring is mapped
/// right after `perf_event_open`, before it is stored in a perf event array.
/// Any other length fails with EINVAL and a message.
pub fn prepare_ring_mmap(fd: RawFd, obj: &Object, len: usize) -> Result<(), i32> {
    let Object::Output(o) = obj else {
        return Ok(());
    };
    if len == o.ring.mmap_len() {
        return Ok(());
    }
    let page = 4096usize;
    let data_pages = (len / page).saturating_sub(1);
    if o.published.load(std::sync::atomic::Ordering::Acquire) {
        report::unsupported(
            &format!("mapping a perf ring with {len} bytes after storing it in a perf event array"),
            &format!(
                "the ring already has {} bytes and programs write into it",
                o.ring.mmap_len()
            ),
        );
        return Err(libc::EINVAL);
    }
    let resizable = len % page == 0 && data_pages.is_power_of_two() && data_pages <= 1 << 16;
    if !resizable {
        report::unsupported(
            &format!("mapping a perf ring with {len} bytes"),
            "the length must be one header page plus a power of two of data pages, as for the kernel",
        );
        return Err(libc::EINVAL);
    }
    let key = crate::objects::file_key(fd).ok_or(libc::EBADF)?;
    let (ring, new_fd) = backend::create_ring(data_pages as u32)?;
    // SAFETY: both fds are open; dup2 atomically makes `fd` name the new ring file.
    if unsafe { libc::dup2(new_fd.as_raw_fd(), fd) } < 0 {
        return Err(report::errno());
    }
    drop(new_fd);
    let replaced = TABLE.replace(
        key,
        fd,
        Object::Output(OutputEvent {
            ring,
            cpu: o.cpu,
            published: Default::default(),
        }),
    )?;
    drop(replaced);
    Ok(())
}

/// `perf_event_open(attr, pid, cpu, group_fd, flags)`.
///
/// # Safety
/// `attr_ptr` is the caller's `perf_event_attr`.
pub unsafe fn perf_event_open(
    attr_ptr: *const u8,
    pid: i32,
    cpu: i32,
    group_fd: i32,
    _flags: u64,
) -> Result<c_long, i32> {
    let mut a = [0u8; READ_BYTES];
    // SAFETY: the first 8 bytes (type, size) are always present; a bad
    // pointer gives EFAULT, as the kernel's perf_copy_attr.
    let head = unsafe { crate::uaccess::read(attr_ptr as u64, 8)? };
    let size = u32::from_ne_bytes(head[SIZE..SIZE + 4].try_into().expect("4")) as usize;
    // size 0 means PERF_ATTR_SIZE_VER0 (64 bytes).
    let size = if size == 0 { 64 } else { size };
    let n = size.min(READ_BYTES);
    // SAFETY: the caller's attr has `size` bytes (EFAULT otherwise).
    a[..n].copy_from_slice(&unsafe { crate::uaccess::read(attr_ptr as u64, n)? });
    let u32_at = |o: usize| u32::from_ne_bytes(a[o..o + 4].try_into().expect("4"));
    let u64_at = |o: usize| u64::from_ne_bytes(a[o..o + 8].try_into().expect("8"));
    let ty = u32_at(TYPE);
    let config = u64_at(CONFIG);
    if group_fd >= 0 {
        report::unsupported("perf event groups", "userbpf perf events cannot be grouped");
        return Err(libc::EINVAL);
    }
    match ty {
        USERBPF_UPROBE_PMU_TYPE => {
            let path_ptr = u64_at(CONFIG1);
            if path_ptr == 0 {
                return Err(libc::EINVAL);
            }
            // SAFETY: config1 of a uprobe event is a NUL-terminated path; a
            // bad pointer gives EFAULT.
            let path = unsafe { crate::bpf::user_path(path_ptr)? };
            let spec = backend::AttachSpec {
                kind: if config & 1 != 0 {
                    LinkKind::Uretprobe
                } else {
                    LinkKind::Uprobe
                },
                path,
                file_offset: u64_at(CONFIG2),
                ref_ctr_offset: config >> PERF_UPROBE_REF_CTR_OFFSET_SHIFT,
                pid: if pid > 0 { pid } else { -1 },
                config: 0,
                sample_period: 0,
                cpu: -1,
            };
            // bpftrace 0.17 opens uprobes with pid -1 even under `-p PID`
            // (the PID only gates its own lifetime), so look at the
            // loader's command line too.
            if let Some(target) = if pid > 0 {
                Some(pid)
            } else {
                pid_option_of_loader()
            } {
                warn_if_no_agent(target);
            } else {
                warn_if_file_runs_untraced(&spec.path);
            }
            // The registry link is published when a program is bound; until
            // then the event is a memfd the loader can hold and close.
            let fd = crate::sysfs::memfd_with(c"userbpf-uprobe", &[])?;
            register(
                fd,
                Object::Uprobe(UprobeEvent {
                    attachment: backend::Attachment::new(spec),
                }),
            )
        }
        PERF_TYPE_SOFTWARE if config == PERF_COUNT_SW_BPF_OUTPUT => {
            let ncpu = backend::nr_possible_cpus();
            if cpu < 0 || cpu as u32 >= ncpu {
                return Err(libc::EINVAL);
            }
            let (ring, fd) = backend::create_ring(output_ring_pages())?;
            let fd = fd.into_raw_fd();
            register(
                fd,
                Object::Output(OutputEvent {
                    ring,
                    cpu: cpu as u32,
                    published: Default::default(),
                }),
            )
        }
        PERF_TYPE_SOFTWARE
            if config == PERF_COUNT_SW_CPU_CLOCK || config == PERF_COUNT_SW_TASK_CLOCK =>
        {
            let flags = u64_at(FLAGS);
            // `interval:` or `profile:`: told apart when a program is bound (set_bpf).
            let timer =
                crate::timer::TimerEvent::new(u64_at(SAMPLE_PERIOD), flags & FLAG_FREQ != 0, cpu, pid)?;
            let fd = crate::sysfs::memfd_with(c"userbpf-cpu-clock", &[])?;
            register(fd, Object::Timer(timer))
        }
        PERF_TYPE_SOFTWARE => {
            report::unsupported(
                &format!("software perf event {config}"),
                "userbpf implements cpu-clock and BPF output only",
            );
            Err(libc::EOPNOTSUPP)
        }
        PERF_TYPE_TRACEPOINT => {
            report::unsupported(
                "kernel tracepoints (tracepoint:)",
                "userbpf traces user space only",
            );
            Err(libc::ENOENT)
        }
        PERF_TYPE_HARDWARE | PERF_TYPE_HW_CACHE | PERF_TYPE_RAW => {
            report::unsupported(
                "hardware perf events (hardware:)",
                "userbpf has no access to PMU counters",
            );
            Err(libc::ENOENT)
        }
        PERF_TYPE_BREAKPOINT => {
            report::unsupported(
                "hardware breakpoints (watchpoint:)",
                "userbpf has no kernel breakpoints",
            );
            Err(libc::ENOENT)
        }
        _ => {
            report::unsupported(
                &format!("perf event type {ty} (kprobe:/kretprobe: or another kernel PMU)"),
                "userbpf has no kernel probes",
            );
            Err(libc::ENOENT)
        }
    }
}

/// The `-p PID` / `-pPID` / `--pid PID` / `--pid=PID` of the loader's own
/// command line (bpftrace and most bcc/libbpf tools spell it so), if any.
fn pid_option_of_loader() -> Option<i32> {
    let cmdline = std::fs::read("/proc/self/cmdline").ok()?;
    pid_option(
        cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned()),
    )
}

/// See [`pid_option_of_loader`].
pub fn pid_option(args: impl IntoIterator<Item = String>) -> Option<i32> {
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let value = match a.as_str() {
            "-p" | "--pid" => args.next(),
            _ => a
                .strip_prefix("--pid=")
                .or_else(|| a.strip_prefix("-p"))
                .map(str::to_string),
        };
        if let Some(pid) = value.and_then(|v| v.parse::<i32>().ok()).filter(|p| *p > 0) {
            return Some(pid);
        }
    }
    None
}

/// `-p PID` on a process without the agent would silently never fire:
/// say so (once per pid). The probe is still created, since an agent can be
/// injected later (`userbpf attach PID`).
pub(crate) fn warn_if_no_agent(pid: i32) {
    // `bpftrace -c CMD` (0.20 and later) forks, opens the probes on the
    // child, then lets it exec: a child still running the loader's own
    // program gets the agent at exec (`crate::child_env`).
    let exe = |p: &str| std::fs::read_link(format!("/proc/{p}/exe")).ok();
    if exe(&pid.to_string()).is_some_and(|e| Some(e) == exe("self")) {
        return;
    }
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return;
    };
    if !maps.contains(crate::child_env::AGENT_FILE) {
        report::once(
            &format!("no agent in {pid}"),
            &format!(
                "userbpf: process {pid} does not have {} loaded, so its probes cannot fire: start it with \
                 LD_PRELOAD=…/{} (or inject it with `userbpf attach {pid}`)",
                crate::child_env::AGENT_FILE,
                crate::child_env::AGENT_FILE
            ),
        );
    }
}

/// A probe on every process running `path` (no pid) fires only in those
/// with the agent on this loader's registry: name, once per file, the
/// processes of this user that run it but cannot fire it, and why (no
/// agent, or an agent on another registry). Other users' processes are not
/// visible here (their maps are not readable) and not the loader's to trace.
pub(crate) fn warn_if_file_runs_untraced(path: &str) {
    use std::os::unix::fs::MetadataExt;
    static SCANNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    match SCANNED.lock() {
        Ok(mut seen) if !seen.iter().any(|p| p == path) => seen.push(path.to_string()),
        _ => return,
    }
    let Ok(meta) = std::fs::metadata(path) else { return };
    let (dev, ino) = (meta.dev(), meta.ino().to_string());
    // /proc/PID/maps shows the device as hex "major:minor".
    let dev = format!("{:02x}:{:02x}", libc::major(dev), libc::minor(dev));
    let me = std::process::id().to_string();
    let exe = |p: &str| std::fs::read_link(format!("/proc/{p}/exe")).ok();
    let my_exe = exe("self");
    let registry = shm_maps::default_dir();
    let (mut no_agent, mut elsewhere) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for pid in entries.flatten().filter_map(|e| e.file_name().into_string().ok()) {
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { continue };
        let runs_it = maps.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().take(5).collect();
            f.len() == 5 && f[3] == dev && f[4] == ino
        });
        // A `-c` child that has not exec'd yet gets the agent at exec.
        if !runs_it || (my_exe.is_some() && exe(&pid) == my_exe) {
            continue;
        }
        if !maps.contains(crate::child_env::AGENT_FILE) {
            no_agent.push(pid);
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let theirs = environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(b"USERBPF_DIR="))
            .filter(|v| !v.is_empty())
            .map(|v| std::path::PathBuf::from(String::from_utf8_lossy(v).into_owned()));
        // Without USERBPF_DIR an agent uses its own user's registry: root's
        // loader (`/dev/shm/userbpf-0`) never reaches another user's apps.
        let their_uid = effective_uid_of(&pid);
        let dir = theirs.or_else(|| their_uid.map(shm_maps::default_dir_of_uid));
        if let Some(dir) = dir.filter(|d| d != &registry) {
            let whose = match their_uid {
                // SAFETY: geteuid has no preconditions.
                Some(uid) if uid != unsafe { libc::geteuid() } => format!("uid {uid}, "),
                _ => String::new(),
            };
            elsewhere.push(format!("{pid} ({whose}{})", dir.display()));
        }
    }
    let listed = |pids: &[String]| {
        let shown = pids.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        let more = pids.len().saturating_sub(10);
        let s = if pids.len() == 1 { "" } else { "es" };
        if more > 0 {
            format!("process{s} {shown} and {more} more")
        } else {
            format!("process{s} {shown}")
        }
    };
    if !no_agent.is_empty() {
        report::line(&format!(
            "userbpf: {path} runs in {} without {}, so its probes cannot fire there: start the app with \
             `userbpf run` (LD_PRELOAD=…/{}) or inject the agent with `userbpf attach PID`",
            listed(&no_agent),
            crate::child_env::AGENT_FILE,
            crate::child_env::AGENT_FILE
        ));
    }
    if !elsewhere.is_empty() {
        let other_user = if elsewhere.iter().any(|p| p.contains("(uid ")) {
            "; another user's process is traced by a loader run as that user (registries are private to their user)"
        } else {
            ""
        };
        report::line(&format!(
            "userbpf: {path} runs in {} whose agent uses another registry than this loader's ({}), so its probes \
             cannot fire there: give both the same USERBPF_DIR{other_user}",
            listed(&elsewhere),
            registry.display()
        ));
    }
}

/// The effective uid of process `pid` (`Uid:` in its status).
fn effective_uid_of(pid: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn register(fd: RawFd, object: Object) -> Result<c_long, i32> {
    match TABLE.insert(fd, object) {
        Ok(_) => Ok(fd as c_long),
        Err(e) => {
            // SAFETY: fd is ours and not yet handed out.
            unsafe { crate::real::close(fd) };
            Err(e)
        }
    }
}

/// `ioctl` on one of our perf event fds.
pub fn ioctl(obj: &Arc<Object>, request: u64, arg: u64) -> Result<i32, i32> {
    match request {
        PERF_EVENT_IOC_ENABLE => set_enabled(obj, true).map(|_| 0),
        PERF_EVENT_IOC_DISABLE => set_enabled(obj, false).map(|_| 0),
        PERF_EVENT_IOC_RESET => Ok(0),
        PERF_EVENT_IOC_SET_BPF => {
            let prog = crate::bpf::prog_of(arg as u32)?;
            set_bpf(obj, &prog, 0).map(|_| 0)
        }
        _ => {
            report::unsupported(
                &format!("ioctl {request:#x} on a userbpf {}", obj.kind()),
                "not a perf ioctl userbpf implements",
            );
            Err(libc::ENOTTY)
        }
    }
}

/// Bind `prog` (an `Object::Prog`) to the event (`PERF_EVENT_IOC_SET_BPF`,
/// `BPF_LINK_CREATE`) with the BPF cookie `cookie` (0 for the ioctl). The
/// event keeps the program alive.
pub fn set_bpf(event: &Arc<Object>, prog_obj: &Arc<Object>, cookie: u64) -> Result<(), i32> {
    use crate::abi::{BPF_PROG_TYPE_KPROBE, BPF_PROG_TYPE_PERF_EVENT};
    let Object::Prog(prog) = &**prog_obj else {
        return Err(libc::EINVAL);
    };
    match &**event {
        Object::Uprobe(u) => {
            if prog.prog_type != BPF_PROG_TYPE_KPROBE {
                return Err(libc::EINVAL);
            }
            u.attachment.set_program(prog.id, prog_obj.clone(), cookie)
        }
        Object::Timer(t) => {
            if prog.prog_type != BPF_PROG_TYPE_PERF_EVENT {
                return Err(libc::EINVAL);
            }
            if cookie != 0 {
                report::unsupported(
                    "BPF cookies on cpu-clock perf events (interval:/profile:)",
                    "the timer program would not see the cookie",
                );
                return Err(libc::EOPNOTSUPP);
            }
            t.set_program(prog.id, prog_obj.clone())?;
            // A sampler: one event per CPU for one program (bpftrace's
            // `profile:`; `interval:` opens CPU 0 only), or a program named
            // for it (0.20+). Its events of other CPUs already bound
            // become samplers too.
            let sampler = t.cpu() > 0
                || prog.name.starts_with("profile")
                || TABLE.all().iter().any(|o| {
                    matches!(&**o, Object::Timer(other) if other.program_id() == prog.id && other.cpu() != t.cpu())
                });
            if sampler {
                for o in TABLE.all() {
                    if let Object::Timer(other) = &*o {
                        if other.program_id() == prog.id {
                            other.sample_in_apps()?;
                        }
                    }
                }
                t.sample_in_apps()?;
            }
            Ok(())
        }
        Object::Output(_) => Err(libc::EINVAL),
        _ => Err(libc::ENOTTY),
    }
}

/// Enable or disable an event.
pub fn set_enabled(event: &Arc<Object>, on: bool) -> Result<(), i32> {
    match &**event {
        Object::Uprobe(u) => u.attachment.set_enabled(on),
        Object::Timer(t) => t.set_enabled(on),
        // BPF_OUTPUT rings accept records whenever they are in a perf event
        // array; enabling is a no-op, as for the kernel's output events.
        Object::Output(_) => Ok(()),
        _ => Err(libc::ENOTTY),
    }
}

#[cfg(test)]
mod tests {
    use super::pid_option;

    #[test]
    fn reads_a_process_effective_uid() {
        let me = std::process::id().to_string();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(super::effective_uid_of(&me), Some(unsafe { libc::geteuid() }));
        assert_eq!(super::effective_uid_of("0"), None);
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_the_pid_option_in_its_spellings() {
        assert_eq!(
            pid_option(args(&["bpftrace", "-e", "x", "-p", "42"])),
            Some(42)
        );
        assert_eq!(pid_option(args(&["tool", "-p42"])), Some(42));
        assert_eq!(pid_option(args(&["tool", "--pid=7"])), Some(7));
        assert_eq!(pid_option(args(&["tool", "--pid", "7"])), Some(7));
        assert_eq!(pid_option(args(&["bpftrace", "-e", "-p", "-c", "x"])), None);
        assert_eq!(
            pid_option(args(&["bpftrace", "-e", "uprobe:/p:f {}"])),
            None
        );
    }
}
