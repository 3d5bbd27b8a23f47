//! The libc symbols `libsyscall_server.so` exports to take over a loader's
//! kernel interface. Each one decides in a few instructions whether the call
//! is userbpf's and otherwise forwards to the real libc function
//! ([`crate::real`]).
//!
//! - `syscall`: libbpf and libbcc reach `bpf()` and `perf_event_open()`
//!   through libc's variadic `syscall(long n, ...)`. On x86-64 System V a
//!   variadic callee reads integer arguments from the same registers
//!   (rdi, rsi, rdx, rcx, r8, r9, then the stack) as a non-variadic one, so
//!   `syscall(n, a1..a6: c_long)` declared non-variadic receives them
//!   correctly (and forwards all six, which is what glibc's own `syscall`
//!   does). Only integer/pointer arguments are ever passed to it.
//! - `geteuid`: bpftrace refuses to run unless it returns 0; the loader is
//!   "root" of its own userbpf world (nothing privileged is done with it).
//!   Server code itself sees the real euid.
//! - `open*`/`fopen*`/`access`: sysfs/tracefs paths ([`crate::sysfs`]).
//! - `ioctl`, `close`: perf event control and object lifetime.
//! - `mmap`/`mmap64`: sizes perf rings to the length the loader maps;
//!   maps the values of mmapable array maps (libbpf's global data).
//! - `epoll_ctl`/`epoll_wait`/`epoll_pwait`: perf rings in epoll sets
//!   ([`crate::epoll`]).
//! - `setrlimit`/`prlimit64` of `RLIMIT_MEMLOCK`: userbpf maps are not locked
//!   kernel memory, so raising the limit is accepted without effect.
//!
//! Re-entrancy: the server's own code calls libc (std's `File::open` calls
//! `open64`, `Drop` calls `close`), which resolves to these same symbols. A
//! thread-local flag marks "inside the server"; nested calls go straight to
//! libc. None of these interposers runs in a signal handler of the loader.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void, CStr};

use crate::abi::{SYS_BPF, SYS_PERF_EVENT_OPEN};
use crate::objects::{file_key, TABLE};
use crate::report::fail;
use crate::sysfs::{self, FileAnswer};
use crate::{real, report};

thread_local! {
    static IN_SERVER: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` as server code unless we are already inside the server, in which
/// case `None` tells the caller to forward to libc.
fn enter<R>(f: impl FnOnce() -> R) -> Option<R> {
    let nested = IN_SERVER.try_with(|c| c.replace(true)).unwrap_or(true);
    if nested {
        return None;
    }
    let r = f();
    let _ = IN_SERVER.try_with(|c| c.set(false));
    Some(r)
}

/// Convert a handler result to the C convention (value, or -1 + errno).
fn c_result(r: Result<c_long, i32>) -> c_long {
    match r {
        Ok(v) => v,
        Err(e) => fail(e),
    }
}

/// # Safety
/// Same contract as libc's `syscall`.
#[no_mangle]
pub unsafe extern "C" fn syscall(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    if n == SYS_BPF {
        if let Some(r) = enter(|| {
            // SAFETY: a2/a3 are the caller's bpf_attr pointer and size.
            let r = unsafe { crate::bpf::bpf(a1 as u32, a2 as *mut u8, a3 as u32) };
            if report::tracing() {
                // SAFETY: the same attr, read by the handler just now.
                let call = unsafe { crate::abi::describe_bpf_call(a1 as u32, a2 as *const u8, a3 as u32) };
                report::trace(&call, r);
            }
            r
        }) {
            return c_result(r);
        }
    } else if n == libc::SYS_capget {
        // SAFETY: a1/a2 are the caller's capget header and data.
        return unsafe { capget(a1 as *mut c_void, a2 as *mut c_void) } as c_long;
    } else if n == SYS_PERF_EVENT_OPEN {
        if let Some(r) = enter(|| {
            // SAFETY: a1 is the caller's perf_event_attr.
            let r = unsafe {
                crate::perf::perf_event_open(
                    a1 as *const u8,
                    a2 as i32,
                    a3 as i32,
                    a4 as i32,
                    a5 as u64,
                )
            };
            if report::tracing() {
                report::trace(&format!("perf_event_open(pid={}, cpu={})", a2 as i32, a3 as i32), r);
            }
            r
        }) {
            return c_result(r);
        }
    }
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { real::syscall(n, a1, a2, a3, a4, a5, a6) }
}

/// bpftrace (and libbpf/bcc tools) see euid 0; the server's own code and
/// the libraries it calls (`shm-maps` checks the registry directory's owner)
/// see the real euid.
#[no_mangle]
pub extern "C" fn geteuid() -> libc::uid_t {
    let in_server = IN_SERVER.try_with(|c| c.get()).unwrap_or(true);
    if in_server {
        // SAFETY: geteuid has no preconditions.
        unsafe { real::geteuid() }
    } else {
        0
    }
}

/// Loaders check capabilities, not only the euid (bpftrace 0.27 refuses
/// to start without CAP_BPF): the loader's own process is reported with
/// the capabilities the server stands in for ([`crate::caps`]). Other
/// processes, and the server's own queries, get the truth.
///
/// # Safety
/// Same contract as libc's `capget`.
#[no_mangle]
pub unsafe extern "C" fn capget(hdr: *mut c_void, data: *mut c_void) -> c_int {
    // SAFETY: forwarding unchanged.
    let r = unsafe { real::capget(hdr, data) };
    let in_server = IN_SERVER.try_with(|c| c.get()).unwrap_or(true);
    if r == 0 && !in_server {
        // SAFETY: a successful capget: hdr and data are the caller's,
        // data sized for the header's version.
        unsafe { crate::caps::grant(hdr, data) };
    }
    r
}

/// Mark the calling thread as a server thread for its whole life (the
/// `interval:` timer threads): every interposed call it makes goes straight
/// to libc, and it sees the real euid.
pub fn mark_server_thread() {
    let _ = IN_SERVER.try_with(|c| c.set(true));
}

/// Path argument as `&str` when it is one the server may answer (`/sys/…`).
///
/// # Safety
/// `path` is null or a NUL-terminated string.
unsafe fn sys_path<'a>(path: *const c_char) -> Option<&'a str> {
    if path.is_null() {
        return None;
    }
    // SAFETY: caller contract; only the first bytes are read before the check.
    let s = unsafe { CStr::from_ptr(path) };
    let b = s.to_bytes();
    if !b.starts_with(b"/sys/") {
        return None;
    }
    s.to_str().ok()
}

/// Answer an open of a sysfs path: `Some(fd or -1)` if ours.
fn open_synthesized(path: &str, flags: c_int) -> Option<c_int> {
    enter(|| match sysfs::answer_open(path, flags) {
        FileAnswer::PassThrough => None,
        FileAnswer::Synthesized(content) => {
            Some(match sysfs::memfd_with(c"userbpf-sysfs", &content) {
                Ok(fd) => fd,
                Err(e) => fail(e),
            })
        }
        FileAnswer::Missing(e) => Some(fail(e)),
    })
    .flatten()
}

macro_rules! interpose_open {
    ($name:ident) => {
        /// # Safety
        /// Same contract as libc's function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
            // SAFETY: caller's path.
            if let Some(p) = unsafe { sys_path(path) } {
                if let Some(fd) = open_synthesized(p, flags) {
                    return fd;
                }
            }
            // SAFETY: forwarding unchanged.
            unsafe { real::$name(path, flags, mode) }
        }
    };
}
interpose_open!(open);
interpose_open!(open64);

macro_rules! interpose_openat {
    ($name:ident) => {
        /// # Safety
        /// Same contract as libc's function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            flags: c_int,
            mode: c_uint,
        ) -> c_int {
            // SAFETY: caller's path (absolute paths ignore dirfd).
            if let Some(p) = unsafe { sys_path(path) } {
                if let Some(fd) = open_synthesized(p, flags) {
                    return fd;
                }
            }
            // SAFETY: forwarding unchanged.
            unsafe { real::$name(dirfd, path, flags, mode) }
        }
    };
}
interpose_openat!(openat);
interpose_openat!(openat64);

/// Open flags equivalent to an `fopen` mode string's access mode.
///
/// # Safety
/// `mode` is null or a NUL-terminated string.
unsafe fn fopen_flags(mode: *const c_char) -> c_int {
    if mode.is_null() {
        return libc::O_RDONLY;
    }
    // SAFETY: caller contract.
    let m = unsafe { CStr::from_ptr(mode) }.to_bytes();
    match (m.first(), m.contains(&b'+')) {
        (Some(b'r'), false) => libc::O_RDONLY,
        (Some(b'r'), true) => libc::O_RDWR,
        (_, false) => libc::O_WRONLY,
        (_, true) => libc::O_RDWR,
    }
}

macro_rules! interpose_fopen {
    ($name:ident) => {
        /// # Safety
        /// Same contract as libc's function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            mode: *const c_char,
        ) -> *mut libc::FILE {
            // SAFETY: caller's path.
            if let Some(p) = unsafe { sys_path(path) } {
                if let Some(fd) = open_synthesized(p, unsafe { fopen_flags(mode) }) {
                    if fd < 0 {
                        return std::ptr::null_mut();
                    }
                    // SAFETY: fd is a fresh memfd we own; `mode` is the caller's.
                    let f = unsafe { libc::fdopen(fd, mode) };
                    if f.is_null() {
                        // SAFETY: closing our own fd on failure.
                        unsafe { real::close(fd) };
                    }
                    return f;
                }
            }
            // SAFETY: forwarding unchanged.
            unsafe { real::$name(path, mode) }
        }
    };
}
interpose_fopen!(fopen);
interpose_fopen!(fopen64);

/// # Safety
/// Same contract as libc's `access`.
#[no_mangle]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    // SAFETY: caller's path.
    if let Some(p) = unsafe { sys_path(path) } {
        if sysfs::is_tracing_dir(p) && mode & libc::W_OK == 0 {
            return 0;
        }
        if let Some(answer) = enter(|| sysfs::answer(p)) {
            match answer {
                FileAnswer::PassThrough => {}
                FileAnswer::Synthesized(_) => {
                    return if mode & (libc::W_OK | libc::X_OK) == 0 {
                        0
                    } else {
                        fail(libc::EACCES)
                    }
                }
                FileAnswer::Missing(e) => return fail(e),
            }
        }
    }
    // SAFETY: forwarding unchanged.
    unsafe { real::access(path, mode) }
}

/// # Safety
/// Same contract as libc's `ioctl` (the third argument is read as a
/// pointer-sized integer, which covers every perf ioctl).
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    if let Some(r) = enter(|| {
        TABLE
            .get(fd)
            .map(|obj| crate::perf::ioctl(&obj, request, arg as u64))
    })
    .flatten()
    {
        return match r {
            Ok(v) => v,
            Err(e) => fail(e),
        };
    }
    // SAFETY: forwarding unchanged.
    unsafe { real::ioctl(fd, request, arg) }
}

macro_rules! interpose_mmap {
    ($name:ident) => {
        /// Perf ring fds are the ring files themselves, so the loader's
        /// `mmap` maps them directly; a ring is resized to the length the
        /// loader asks for ([`crate::perf::prepare_ring_mmap`]). Map fds are
        /// the map files: an mmapable array's values start after the map's
        /// header, so the offset is moved there; a ring buffer is mapped in
        /// the kernel's layout, its data twice ([`crate::bpf::prepare_mmap`]).
        ///
        /// # Safety
        /// Same contract as libc's function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            addr: *mut c_void,
            len: usize,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            off: libc::off_t,
        ) -> *mut c_void {
            if fd >= 0 {
                let answer = enter(|| {
                    TABLE
                        .get(fd)
                        .map(|obj| {
                            let req = crate::bpf::MmapRequest {
                                addr: addr.cast(),
                                len,
                                prot,
                                flags,
                                off: off as i64,
                            };
                            crate::bpf::prepare_mmap(fd, &obj, req)
                        })
                })
                .flatten();
                match answer {
                    Some(Err(e)) => {
                        let _: c_int = fail(e);
                        return libc::MAP_FAILED;
                    }
                    // SAFETY: forwarding with the file offset of the object's data.
                    Some(Ok(crate::bpf::MmapAnswer::Offset(file_off))) => {
                        return unsafe {
                            real::$name(addr, len, prot, flags, fd, file_off as libc::off_t)
                        };
                    }
                    Some(Ok(crate::bpf::MmapAnswer::Mapped(p))) => return p.cast(),
                    None => {}
                }
            }
            // SAFETY: forwarding unchanged.
            unsafe { real::$name(addr, len, prot, flags, fd, off) }
        }
    };
}
interpose_mmap!(mmap);
interpose_mmap!(mmap64);

/// # Safety
/// Same contract as libc's `close`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let handled = enter(|| {
        crate::epoll::forget_epoll_fd(fd);
        if TABLE.is_empty() {
            return None;
        }
        let key = file_key(fd)?;
        TABLE.get_key(key)?;
        // SAFETY: the caller closes its own fd.
        let r = unsafe { real::close(fd) };
        let err = report::errno();
        // Dropping the last reference releases the registry objects.
        drop(TABLE.release_if_unreferenced(key));
        Some(if r == 0 { 0 } else { fail(err) })
    })
    .flatten();
    match handled {
        Some(r) => r,
        // SAFETY: forwarding unchanged.
        None => unsafe { real::close(fd) },
    }
}

/// # Safety
/// Same contract as libc's `epoll_ctl`.
#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut libc::epoll_event,
) -> c_int {
    // SAFETY: `event` is the caller's (may be null for DEL).
    if let Some(r) = enter(|| unsafe { crate::epoll::ctl(epfd, op, fd, event) }).flatten() {
        return match r {
            Ok(()) => 0,
            Err(e) => fail(e),
        };
    }
    // SAFETY: forwarding unchanged.
    unsafe { real::epoll_ctl(epfd, op, fd, event) }
}

/// # Safety
/// Same contract as libc's `epoll_wait`.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: forwarding the caller's buffer.
    unsafe { crate::epoll::wait(epfd, events, max, timeout, None) }
}

/// # Safety
/// Same contract as libc's `epoll_pwait`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: forwarding the caller's buffer and mask.
    unsafe { crate::epoll::wait(epfd, events, max, timeout, Some(mask)) }
}

fn is_memlock(resource: c_int) -> bool {
    resource == libc::RLIMIT_MEMLOCK as c_int
}

/// # Safety
/// Same contract as libc's `setrlimit`.
#[no_mangle]
pub unsafe extern "C" fn setrlimit(resource: c_int, rlim: *const libc::rlimit) -> c_int {
    if is_memlock(resource) {
        return 0;
    }
    // SAFETY: forwarding unchanged.
    unsafe { real::setrlimit(resource, rlim) }
}

/// # Safety
/// Same contract as libc's `setrlimit64`.
#[no_mangle]
pub unsafe extern "C" fn setrlimit64(resource: c_int, rlim: *const libc::rlimit) -> c_int {
    if is_memlock(resource) {
        return 0;
    }
    // SAFETY: forwarding unchanged.
    unsafe { real::setrlimit64(resource, rlim) }
}

/// # Safety
/// Same contract as libc's `prlimit64`.
#[no_mangle]
pub unsafe extern "C" fn prlimit64(
    pid: libc::pid_t,
    resource: c_int,
    new: *const libc::rlimit,
    old: *mut libc::rlimit,
) -> c_int {
    if is_memlock(resource)
        && !new.is_null()
        && (pid == 0 || pid == std::process::id() as libc::pid_t)
    {
        // Report the current limit, accept the new one without applying it.
        // SAFETY: a read-only query of our own limit into the caller's buffer.
        return unsafe { real::prlimit64(0, resource, std::ptr::null(), old) };
    }
    // SAFETY: forwarding unchanged.
    unsafe { real::prlimit64(pid, resource, new, old) }
}
