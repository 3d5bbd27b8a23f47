//! Helpers describing the current task: pid/tgid, uid/gid, comm, cgroup,
//! CPU. All answer from caches so the hot path makes no system call:
//!
//! - pid/tgid: per-thread cache, invalidated by a fork generation counter
//!   bumped in a `pthread_atfork` child handler ([`after_fork_child`],
//!   registered by `runtime::init_process`).
//! - uid/gid, cgroup id and the pid namespace: process-wide atomics, refreshed by
//!   [`refresh_slow_caches`] (the agent's watcher calls it on every wake).
//! - comm: per-thread cache tagged with a refresh epoch; a thread re-reads
//!   its name (one `prctl`) at most once per epoch.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(1);
static COMM_EPOCH: AtomicU64 = AtomicU64::new(1);
/// `gid << 32 | uid`; `u64::MAX` until first refreshed.
static UID_GID: AtomicU64 = AtomicU64::new(u64::MAX);
/// `u64::MAX` until first refreshed; 0 when the process has no cgroup v2 path.
static CGROUP_ID: AtomicU64 = AtomicU64::new(u64::MAX);
/// `st_dev` and `st_ino` of `/proc/self/ns/pid`; `u64::MAX` until refreshed.
static PIDNS_DEV: AtomicU64 = AtomicU64::new(u64::MAX);
static PIDNS_INO: AtomicU64 = AtomicU64::new(u64::MAX);

const TASK_COMM_LEN: usize = 16;

thread_local! {
    /// (fork generation, tgid << 32 | tid)
    static PID_TGID: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// (comm epoch, name bytes)
    static COMM: Cell<(u64, [u8; TASK_COMM_LEN])> = const { Cell::new((0, [0; TASK_COMM_LEN])) };
}

/// Call in the child after `fork`: pid/tid caches become stale.
pub fn after_fork_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Release);
    COMM_EPOCH.fetch_add(1, Ordering::Release);
}

/// Refresh the process-wide caches (uid/gid, cgroup id) and let every
/// thread re-read its comm and signal mask on its next use. Makes a few system calls:
/// call it from a background thread, never from a probe.
pub fn refresh_slow_caches() {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    UID_GID.store(((gid as u64) << 32) | uid as u64, Ordering::Relaxed);
    CGROUP_ID.store(read_cgroup_id().unwrap_or(0), Ordering::Relaxed);
    let (dev, ino) = read_pid_namespace().unwrap_or((0, 0));
    PIDNS_INO.store(ino, Ordering::Relaxed);
    PIDNS_DEV.store(dev, Ordering::Release);
    COMM_EPOCH.fetch_add(1, Ordering::Release);
    crate::fault::recheck_signal_masks();
}

/// The cgroup v2 id of this process: the inode number of its directory in
/// the cgroup2 hierarchy, as the kernel's `bpf_get_current_cgroup_id`.
fn read_cgroup_id() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let meta = std::fs::metadata(format!("/sys/fs/cgroup{path}")).ok()?;
    Some(meta.ino())
}

/// `(st_dev, st_ino)` of this process's pid namespace.
fn read_pid_namespace() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self/ns/pid").ok()?;
    Some((meta.dev(), meta.ino()))
}

/// `bpf_get_ns_current_pid_tgid(dev, ino, nsdata, size)`: the pid and tgid
/// as seen in the pid namespace `dev`/`ino` (what `stat` of a
/// `/proc/PID/ns/pid` gives; bpftrace 0.20+ passes its own when it runs in
/// a container), if the app lives in it. The program runs in the app, so
/// in its own namespace those are its own `getpid`/`gettid`. Otherwise, or
/// for a wrong size, `nsdata` is zeroed and -EINVAL returned, as the kernel.
pub unsafe extern "C" fn get_ns_current_pid_tgid(dev: u64, ino: u64, nsdata: u64, size: u64, _: u64, _: *mut c_void) -> u64 {
    const EINVAL: u64 = -(libc::EINVAL as i64) as u64;
    if PIDNS_DEV.load(Ordering::Acquire) == u64::MAX {
        refresh_slow_caches();
    }
    let (ns_dev, ns_ino) = (PIDNS_DEV.load(Ordering::Acquire), PIDNS_INO.load(Ordering::Relaxed));
    // The kernel compares its own dev_t encoding (major << 20 | minor);
    // loaders pass stat's, which is the same for nsfs' small minor numbers.
    let kernel_dev = (libc::major(ns_dev) as u64) << 20 | libc::minor(ns_dev) as u64;
    let matches = size == 8 && ns_ino != 0 && ino == ns_ino && (dev == ns_dev || dev == kernel_dev);
    let out = nsdata as *mut u32;
    if !matches {
        // SAFETY: the verifier proved `nsdata` writable for `size` bytes.
        unsafe { std::ptr::write_bytes(out as *mut u8, 0, size as usize) };
        return EINVAL;
    }
    let v = current_pid_tgid();
    // SAFETY: `struct bpf_pidns_info { u32 pid; u32 tgid; }`, 8 writable bytes.
    unsafe {
        out.write_unaligned(v as u32);
        out.add(1).write_unaligned((v >> 32) as u32);
    }
    0
}

#[inline]
fn current_pid_tgid() -> u64 {
    let generation = FORK_GENERATION.load(Ordering::Acquire);
    PID_TGID.with(|cache| {
        let (cached_generation, value) = cache.get();
        if cached_generation == generation {
            return value;
        }
        // SAFETY: getpid/gettid cannot fail. Once per thread per fork.
        let (tgid, tid) = unsafe { (libc::getpid() as u64, libc::gettid() as u64) };
        let value = (tgid << 32) | tid;
        cache.set((generation, value));
        value
    })
}

/// This process's id (the tgid), from the same fork-aware per-thread cache
/// as `bpf_get_current_pid_tgid`: no system call after a thread's first use.
#[inline]
pub fn current_tgid() -> u32 {
    (current_pid_tgid() >> 32) as u32
}

/// `bpf_get_current_pid_tgid()`: `tgid << 32 | tid`.
pub unsafe extern "C" fn get_current_pid_tgid(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    current_pid_tgid()
}

/// `bpf_get_current_uid_gid()`: `gid << 32 | uid`.
pub unsafe extern "C" fn get_current_uid_gid(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    let value = UID_GID.load(Ordering::Relaxed);
    if value != u64::MAX {
        return value;
    }
    refresh_slow_caches();
    UID_GID.load(Ordering::Relaxed)
}

/// `bpf_get_current_cgroup_id()`.
pub unsafe extern "C" fn get_current_cgroup_id(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    let value = CGROUP_ID.load(Ordering::Relaxed);
    if value != u64::MAX {
        return value;
    }
    refresh_slow_caches();
    CGROUP_ID.load(Ordering::Relaxed)
}

/// `bpf_get_current_comm(buf, size)`: copies the thread name, truncated
/// and NUL-terminated; `-EINVAL` (buffer zeroed) for size 0.
pub unsafe extern "C" fn get_current_comm(buf: u64, size: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    let size = size as usize;
    if size == 0 {
        return -(libc::EINVAL as i64) as u64;
    }
    let epoch = COMM_EPOCH.load(Ordering::Acquire);
    let name = COMM.with(|cache| {
        let (cached_epoch, name) = cache.get();
        if cached_epoch == epoch {
            return name;
        }
        let mut name = [0u8; TASK_COMM_LEN];
        // SAFETY: PR_GET_NAME writes at most 16 bytes into `name`.
        unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
        cache.set((epoch, name));
        name
    });
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(TASK_COMM_LEN);
    let copy = name_len.min(size - 1);
    let dst = buf as *mut u8;
    // SAFETY: the verifier proved `buf` writable for `size` bytes.
    std::ptr::copy_nonoverlapping(name.as_ptr(), dst, copy);
    std::ptr::write_bytes(dst.add(copy), 0, size - copy);
    0
}

/// `bpf_get_smp_processor_id()`: the run's CPU — the CPU slot it holds
/// (a program calling this helper always claims one, so the id is as
/// exclusive as the kernel's for the whole run), else the CPU the thread
/// runs on (rseq, no system call).
pub unsafe extern "C" fn get_smp_processor_id(_: u64, _: u64, _: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: `env` is the RunEnv (or null) the caller passed to run.
    match unsafe { crate::env::RunEnv::cpu_from_helper_arg(env) } {
        shm_maps::cpu::CURRENT => current_cpu() as u64,
        claimed => claimed as u64,
    }
}

/// The CPU this thread runs on now (index into per-CPU map values and the
/// PERF_EVENT_ARRAY).
#[inline]
pub fn current_cpu() -> u32 {
    shm_maps::cpu::current()
}

/// Register [`after_fork_child`] with `pthread_atfork` (once per process),
/// so pid/tid caches are right in forked children of any embedder.
pub(crate) fn install_fork_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        extern "C" fn child() {
            after_fork_child();
        }
        // SAFETY: registering a plain extern "C" function that only
        // touches atomics. The libraries embedding the runtime are never
        // unloaded (libagent.so is linked with -z nodelete).
        unsafe { libc::pthread_atfork(None, None, Some(child)) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_tgid_matches_the_system() {
        // SAFETY: helpers ignore their arguments here.
        let v = unsafe { get_current_pid_tgid(0, 0, 0, 0, 0, std::ptr::null_mut()) };
        assert_eq!(v >> 32, std::process::id() as u64);
        // SAFETY: gettid has no preconditions.
        assert_eq!(v & 0xffff_ffff, unsafe { libc::gettid() } as u64);
        let other = std::thread::spawn(|| unsafe { get_current_pid_tgid(0, 0, 0, 0, 0, std::ptr::null_mut()) })
            .join()
            .unwrap();
        assert_eq!(other >> 32, v >> 32);
        assert_ne!(other & 0xffff_ffff, v & 0xffff_ffff);
    }

    /// The app's own pid namespace (as a loader in it would `stat` it)
    /// gives its pid and tid; another namespace or a wrong size gives
    /// -EINVAL and zeroes, as the kernel.
    #[test]
    fn ns_pid_tgid_answers_for_the_apps_own_namespace_only() {
        use std::os::unix::fs::MetadataExt;
        let ns = std::fs::metadata("/proc/self/ns/pid").unwrap();
        let call = |dev: u64, ino: u64, size: u64| {
            let mut out = [0xffu8; 8];
            // SAFETY: `out` has 8 writable bytes, at least `size`.
            let r = unsafe { get_ns_current_pid_tgid(dev, ino, out.as_mut_ptr() as u64, size, 0, std::ptr::null_mut()) };
            (r as i64, u32::from_ne_bytes(out[..4].try_into().unwrap()), u32::from_ne_bytes(out[4..].try_into().unwrap()))
        };
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert_eq!(call(ns.dev(), ns.ino(), 8), (0, tid, std::process::id()));
        let einval = -(libc::EINVAL as i64);
        assert_eq!(call(ns.dev(), ns.ino() + 1, 8), (einval, 0, 0), "another namespace");
        assert_eq!(call(ns.dev() + 1, ns.ino(), 8).0, einval, "another device");
        assert_eq!(call(ns.dev(), ns.ino(), 4), (einval, 0, u32::MAX), "size 4: 4 bytes zeroed");
    }

    #[test]
    fn pid_tgid_is_the_childs_after_fork() {
        install_fork_handler();
        // Warm this thread's cache in the parent first.
        // SAFETY: helpers ignore their arguments here.
        let parent = unsafe { get_current_pid_tgid(0, 0, 0, 0, 0, std::ptr::null_mut()) };
        assert_eq!(parent >> 32, std::process::id() as u64);
        // SAFETY: the child only calls the helper, getpid and _exit.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let v = get_current_pid_tgid(0, 0, 0, 0, 0, std::ptr::null_mut());
                let ok = v >> 32 == libc::getpid() as u64 && v & 0xffff_ffff == libc::gettid() as u64;
                libc::_exit(if ok { 0 } else { 1 });
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child saw its parent's ids");
        }
    }

    #[test]
    fn uid_gid_and_comm() {
        // SAFETY: as above; comm writes into a 16-byte local buffer.
        unsafe {
            let v = get_current_uid_gid(0, 0, 0, 0, 0, std::ptr::null_mut());
            assert_eq!(v & 0xffff_ffff, libc::getuid() as u64);
            assert_eq!(v >> 32, libc::getgid() as u64);
            let mut buf = [0xffu8; 16];
            libc::prctl(libc::PR_SET_NAME, c"probe-name".as_ptr());
            refresh_slow_caches();
            assert_eq!(get_current_comm(buf.as_mut_ptr() as u64, 16, 0, 0, 0, std::ptr::null_mut()), 0);
            assert_eq!(&buf[..11], b"probe-name\0");
            let mut small = [0xffu8; 4];
            assert_eq!(get_current_comm(small.as_mut_ptr() as u64, 4, 0, 0, 0, std::ptr::null_mut()), 0);
            assert_eq!(&small, b"pro\0");
        }
    }
}
