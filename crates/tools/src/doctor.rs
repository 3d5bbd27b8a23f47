//! `userbpf doctor`: checks that this machine has what userbpf uses, and says
//! in plain words what is missing and how to fix it.
//!
//! Each check yields a [`Check`]: `ok`, `warning` (something works less well
//! or one command is unavailable) or `problem` (userbpf cannot work as is).
//! The command exits with [`exit::DOCTOR_PROBLEMS`] when there is a problem.

use crate::error::{exit, CliResult};
use crate::locate::{self, Library};
use crate::procfs;
use serde::Serialize;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Problem,
}

/// The outcome of one check.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (absent when all is well).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check { name, status: Status::Ok, detail: detail.into(), fix: None }
}

fn warning(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, status: Status::Warning, detail: detail.into(), fix: Some(fix.into()) }
}

fn problem(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, status: Status::Problem, detail: detail.into(), fix: Some(fix.into()) }
}

/// The registry directory in effect (shm-maps' rule) and where that choice comes from.
pub fn registry_dir() -> (PathBuf, &'static str) {
    let source = if std::env::var_os("USERBPF_DIR").is_some_and(|v| !v.is_empty()) { "$USERBPF_DIR" } else { "default" };
    (shm_maps::default_dir(), source)
}

fn check_machine() -> Check {
    // SAFETY: uname fills a plain struct we own.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::uname(&mut uts) };
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates every field.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned()
    };
    let (release, machine) = (field(&uts.release), field(&uts.machine));
    let version: Vec<u32> = release.split(|c: char| !c.is_ascii_digit()).take(2).filter_map(|p| p.parse().ok()).collect();
    if machine != "x86_64" {
        return problem("kernel", format!("Linux {release} on {machine}"), "userbpf's JIT and code patching support x86-64 only");
    }
    if version.as_slice() < [4, 18].as_slice() {
        return problem(
            "kernel",
            format!("Linux {release} on {machine}"),
            "userbpf needs Linux 4.18 or later (membarrier sync-core, rseq); upgrade the kernel",
        );
    }
    ok("kernel", format!("Linux {release} on {machine}"))
}

const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_long = 1 << 5;

fn check_membarrier() -> Check {
    let name = "membarrier";
    // SAFETY: MEMBARRIER_CMD_QUERY only returns a bit mask.
    let mask = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0) };
    if mask < 0 {
        return problem(
            name,
            format!("membarrier() is unavailable ({})", std::io::Error::last_os_error()),
            "the agent uses membarrier to make patched code visible to every thread safely; use a kernel built with CONFIG_MEMBARRIER",
        );
    }
    let has = |bit| mask & bit != 0;
    match (has(MEMBARRIER_CMD_PRIVATE_EXPEDITED), has(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)) {
        (true, true) => ok(name, "private expedited and sync-core commands available"),
        (true, false) => warning(
            name,
            "private expedited available, sync-core missing",
            "code patching falls back to a slower barrier; Linux 4.16+ on x86-64 has sync-core",
        ),
        _ => problem(name, format!("query mask {mask:#x} lacks private expedited"), "use Linux 4.14 or later"),
    }
}

fn check_rseq() -> Check {
    // A zero-length registration is always invalid: EINVAL (or EBUSY when libc
    // already registered this thread) means the call exists, ENOSYS that it does not.
    // SAFETY: the kernel rejects the null area before touching memory.
    let ret = unsafe { libc::syscall(libc::SYS_rseq, std::ptr::null::<u8>(), 0u32, 0i32, 0u32) };
    let err = std::io::Error::last_os_error();
    if ret < 0 && err.raw_os_error() == Some(libc::ENOSYS) {
        warning("rseq", "rseq() is not available", "per-CPU map slots fall back to sched_getcpu(); Linux 4.18+ has rseq")
    } else {
        ok("rseq", "rseq() available (fast current-CPU for per-CPU maps)")
    }
}

fn check_process_vm_readv() -> Check {
    let value = 0x5eed_u64;
    let mut copy = 0u64;
    let local = libc::iovec { iov_base: (&mut copy as *mut u64).cast(), iov_len: 8 };
    let remote = libc::iovec { iov_base: (&value as *const u64 as *mut u64).cast(), iov_len: 8 };
    // SAFETY: both iovecs describe 8 live bytes of this process.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == 8 && copy == value {
        ok("process_vm_readv", "available (bpf_probe_read_user)")
    } else {
        warning(
            "process_vm_readv",
            format!("unavailable ({})", std::io::Error::last_os_error()),
            "probe_read helpers fall back to a slower path; check seccomp or CONFIG_CROSS_MEMORY_ATTACH",
        )
    }
}

fn check_ptrace_scope() -> Check {
    let name = "ptrace (attach)";
    match procfs::yama_ptrace_scope() {
        None => ok(name, "Yama is not enabled: `userbpf attach` works on your own processes"),
        Some(0) => ok(name, "Yama ptrace_scope = 0: `userbpf attach` works on your own processes"),
        Some(1) => warning(
            name,
            "Yama ptrace_scope = 1: `userbpf attach` works only as root (ordinary users may trace only their children)",
            "as root: `echo 0 > /proc/sys/kernel/yama/ptrace_scope` (persist with kernel.yama.ptrace_scope=0 in /etc/sysctl.d), \
             or start apps with `userbpf run`",
        ),
        Some(scope) => warning(
            name,
            format!("Yama ptrace_scope = {scope}: `userbpf attach` is restricted to root{}", if scope >= 3 { " (disabled entirely)" } else { "" }),
            "start apps with `userbpf run` instead (scope 3 cannot be lowered without a reboot)",
        ),
    }
}

fn check_dev_shm() -> Check {
    let name = "/dev/shm";
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return problem(name, "/dev/shm does not exist", "mount a tmpfs there: `mount -t tmpfs -o mode=1777 tmpfs /dev/shm` (as root)");
    }
    let probe = shm.join(format!(".userbpf-doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"x") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            ok(name, "writable")
        }
        Err(e) => problem(
            name,
            format!("not writable: {}", crate::error::os_error_text(&e)),
            "as root: `chmod 1777 /dev/shm`, or set USERBPF_DIR to a writable directory on a tmpfs",
        ),
    }
}

fn check_registry_dir() -> Check {
    let name = "registry directory";
    let (dir, source) = registry_dir();
    let shown = format!("{} ({source})", dir.display());
    let meta = match std::fs::metadata(&dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return ok(name, format!("{shown} does not exist yet; it is created (mode 0700) on first use"));
        }
        Err(e) => {
            return problem(name, format!("{shown}: {}", crate::error::os_error_text(&e)), "check the path and its parents' permissions")
        }
    };
    if !meta.is_dir() {
        return problem(name, format!("{shown} is not a directory"), format!("remove it or point USERBPF_DIR elsewhere: `rm {}`", dir.display()));
    }
    // A directory that holds other things and no registry (USERBPF_DIR=/tmp)
    // is not userbpf's to remove or chmod: advise a dedicated one instead.
    let holds_registry = dir.join("registry").exists();
    let holds_other_files = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if !holds_registry && holds_other_files {
        return problem(
            name,
            format!("{shown} is not a userbpf registry: it holds other files and no `registry`"),
            "set USERBPF_DIR to a directory of its own (the default is /dev/shm/userbpf-<uid>); never point it at a shared directory such as /tmp",
        );
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != euid && !std::env::var("USERBPF_SHARED").is_ok_and(|v| v == "1") {
        return problem(
            name,
            format!("{shown} belongs to uid {}, not to you (uid {euid})", meta.uid()),
            format!(
                "another user owns it; remove it as root (`rm -r {}`) or set USERBPF_DIR to a directory you own",
                dir.display()
            ),
        );
    }
    // The same rule shm-maps applies when opening it: private, or group-shared
    // when USERBPF_SHARED=1 (a volume shared between containers).
    let shared = std::env::var("USERBPF_SHARED").is_ok_and(|v| v == "1");
    let forbidden = if shared { 0o007 } else { 0o077 };
    if mode & forbidden != 0 {
        let fix = if shared {
            format!("`chmod 0770 {}`", dir.display())
        } else {
            format!("`chmod 0700 {}` (or, for a volume shared by a group, mode 0770 and USERBPF_SHARED=1)", dir.display())
        };
        return problem(name, format!("{shown} is open to other users (mode {mode:04o}); userbpf refuses it"), fix);
    }
    let access = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok();
    // SAFETY: access reads a NUL-terminated path.
    let writable = access.is_some_and(|p| unsafe { libc::access(p.as_ptr(), libc::W_OK | libc::X_OK) } == 0);
    if !writable {
        return problem(name, format!("{shown} is not writable by you (mode {mode:04o})"), format!("`chmod u+rwx {}`", dir.display()));
    }
    // The registry in it must speak this build's layout, or every command
    // (and every agent and loader of this build) refuses it.
    if holds_registry {
        match shm_maps::registry_layout_version(&dir) {
            Ok(v) if v == shm_maps::LAYOUT_VERSION => {}
            Ok(v) => {
                return problem(
                    name,
                    format!("{shown} holds a registry of layout version {v}; this userbpf uses version {}", shm_maps::LAYOUT_VERSION),
                    format!(
                        "another userbpf build made it: when no userbpf process runs, remove it (`rm -r {}`), or set USERBPF_DIR to another directory",
                        dir.display()
                    ),
                )
            }
            Err(e) => return problem(name, format!("{shown}: {e}"), "set USERBPF_DIR to a directory of its own"),
        }
    }
    let layout = if holds_registry { format!(", registry layout {}", shm_maps::LAYOUT_VERSION) } else { String::new() };
    ok(name, format!("{shown}, mode {mode:04o}, yours{layout}"))
}

fn check_library(library: Library) -> Check {
    let name = match library {
        Library::Agent => "libagent.so",
        Library::SyscallServer => "libsyscall_server.so",
    };
    match locate::find(library) {
        Ok(path) => ok(name, path.display().to_string()),
        Err(err) => problem(name, err.message, err.hint.unwrap_or_default()),
    }
}

/// Finds an executable in `$PATH`, then in the sbin directories Debian puts tools in.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `program args` and returns the first line of its output, giving up after 5 s.
fn first_output_line(program: &Path, args: &[&str]) -> Option<String> {
    let mut child = Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().ok()?;
    String::from_utf8_lossy(&output.stdout).lines().next().map(|l| l.trim().to_string())
}

fn debian_package_version(package: &str) -> Option<String> {
    let dpkg = find_program("dpkg-query")?;
    first_output_line(&dpkg, &["-W", "-f=${Version}", package]).filter(|v| !v.is_empty())
}

fn check_bpftrace() -> Check {
    match find_program("bpftrace") {
        Some(path) => {
            let version = first_output_line(&path, &["--version"]).unwrap_or_else(|| "version unknown".to_string());
            ok("bpftrace", format!("{version} at {}", path.display()))
        }
        None => warning(
            "bpftrace",
            "not installed: `userbpf bpftrace` cannot run",
            "Debian/Ubuntu: `apt-get install bpftrace`",
        ),
    }
}

fn check_tool_suite(name: &'static str, probe_program: &str, package: &str) -> Check {
    match find_program(probe_program) {
        Some(path) => {
            let version = debian_package_version(package).map(|v| format!("{package} {v}")).unwrap_or_else(|| package.to_string());
            ok(name, format!("{version} ({})", path.parent().unwrap_or(&path).display()))
        }
        None => warning(name, format!("not installed (no {probe_program})"), format!("Debian/Ubuntu: `apt-get install {package}`")),
    }
}

/// bcc compiles its programs against kernel headers at run time: the
/// running kernel's own, `$BCC_KERNEL_SOURCE`, or (joined by the syscall
/// server, see the `kheaders` crate) Debian's `linux-headers-amd64`.
fn check_bcc_headers() -> Option<Check> {
    const NAME: &str = "bcc kernel headers";
    find_program("opensnoop-bpfcc")?;
    if let Some(dir) = std::env::var_os("BCC_KERNEL_SOURCE") {
        return Some(ok(NAME, format!("BCC_KERNEL_SOURCE={}", std::path::Path::new(&dir).display())));
    }
    if kheaders::running_kernel_has_headers() {
        return Some(ok(NAME, "the running kernel's own headers are installed".to_string()));
    }
    Some(match kheaders::newest_debian_headers(std::path::Path::new("/usr/src")) {
        Some((_, arch)) => ok(
            NAME,
            format!("{} (with its -common half; the syscall server joins them for bcc)", arch.display()),
        ),
        None => warning(
            NAME,
            "bcc tools compile their programs against kernel headers, and none are installed".to_string(),
            "Debian/Ubuntu: `apt-get install --no-install-recommends linux-headers-amd64` (the syscall server then finds them)"
                .to_string(),
        ),
    })
}

/// Runs every check.
pub fn run_checks() -> Vec<Check> {
    vec![
        check_machine(),
        check_membarrier(),
        check_rseq(),
        check_process_vm_readv(),
        check_ptrace_scope(),
        check_dev_shm(),
        check_registry_dir(),
        check_library(Library::Agent),
        check_library(Library::SyscallServer),
        check_bpftrace(),
        check_tool_suite("bcc tools", "opensnoop-bpfcc", "bpfcc-tools"),
        check_tool_suite("libbpf tools", "bashreadline", "libbpf-tools"),
    ]
    .into_iter()
    .chain(check_bcc_headers())
    .collect()
}

/// `userbpf doctor`.
pub fn doctor(json: bool) -> CliResult {
    let checks = run_checks();
    let problems = checks.iter().filter(|c| c.status == Status::Problem).count();
    let warnings = checks.iter().filter(|c| c.status == Status::Warning).count();
    if json {
        let report = serde_json::json!({ "checks": checks, "problems": problems, "warnings": warnings });
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for check in &checks {
            let mark = match check.status {
                Status::Ok => "ok  ",
                Status::Warning => "warn",
                Status::Problem => "FAIL",
            };
            println!("[{mark}] {:width$}  {}", check.name, check.detail);
            if let Some(fix) = &check.fix {
                println!("       {:width$}  fix: {fix}", "");
            }
        }
        println!();
        match (problems, warnings) {
            (0, 0) => println!("everything userbpf uses is here"),
            (0, w) => println!("userbpf can run; {w} warning(s) above say what works less well"),
            (p, _) => println!("{p} problem(s) to fix before userbpf can work fully (see the `fix:` lines)"),
        }
    }
    Ok(if problems == 0 { exit::OK } else { exit::DOCTOR_PROBLEMS })
}
