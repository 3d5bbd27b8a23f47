//! Thin, checked wrappers over the OS calls the crate needs: shared file
//! mappings, futexes on shared words, OFD locks, atomic file creation.
//! Everything here is slow-path (creation, opening, waiting, liveness checks).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// A `MAP_SHARED` read-write mapping of a whole file, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all concurrent access to its
// contents goes through atomics or the crate's own locking protocols.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, shared and read-write.
    pub fn map(fd: RawFd, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh mapping chosen by the kernel; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: NonNull::new(p as *mut u8).expect("mmap returned null"), len })
    }

    /// Wraps an existing mapping the caller created (e.g. a double mapping).
    ///
    /// # Safety
    /// `ptr..ptr+len` must be a mapping owned by nobody else, unmappable with
    /// one `munmap(ptr, len)`.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> Mapping {
        Mapping { ptr, len }
    }

    #[inline(always)]
    pub fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping (see constructors).
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut _, self.len) };
    }
}

pub fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens `path` with raw flags (always `O_CLOEXEC`).
pub fn open(path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: valid NUL-terminated path; result checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if flags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL {
        set_exact_mode(&fd, mode)?;
    }
    Ok(fd)
}

/// Gives a file this process just created exactly `mode`: the umask (022
/// by default) would otherwise narrow a group-shared registry's 0660 to
/// 0640, and a second group member could not open what the first created.
pub fn set_exact_mode(fd: &impl AsRawFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on an open fd.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sizes a new file and makes tmpfs commit the pages now, so a map that
/// cannot be backed fails at creation (ENOMEM) rather than with SIGBUS later.
pub fn allocate(fd: &OwnedFd, len: usize) -> io::Result<()> {
    // SAFETY: plain syscall on an owned fd.
    let r = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len as libc::off_t) };
    match r {
        0 => Ok(()),
        // Filesystems without fallocate: fall back to a sparse size.
        libc::EOPNOTSUPP | libc::EINVAL if len > 0 => {
            // SAFETY: plain syscall on an owned fd.
            if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

pub fn file_len(fd: &OwnedFd) -> io::Result<usize> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as usize)
}

/// Publishes `tmp` as `dst` without replacing an existing `dst`.
pub fn publish_noreplace(tmp: &Path, dst: &Path) -> io::Result<()> {
    let (a, b) = (cstr(tmp)?, cstr(dst)?);
    // SAFETY: valid paths; link() is atomic and fails with EEXIST.
    let r = unsafe { libc::link(a.as_ptr(), b.as_ptr()) };
    let err = if r != 0 { Some(io::Error::last_os_error()) } else { None };
    // SAFETY: valid path.
    unsafe { libc::unlink(a.as_ptr()) };
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Tries to take an exclusive OFD lock on the whole file without waiting.
/// `Ok(true)` = acquired, `Ok(false)` = someone else holds it.
pub fn ofd_try_lock(fd: &OwnedFd) -> io::Result<bool> {
    // SAFETY: zeroed flock is valid; fields set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // SAFETY: valid fd and flock pointer.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// `FUTEX_WAIT` on a word in shared memory (not `FUTEX_PRIVATE`).
/// Returns when woken, on timeout, or at once if `*word != expected`.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: word is a valid, aligned u32 for the duration of the call.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, tsp, 0usize, 0u32);
    }
}

/// Whether this process takes part in consumers' global barriers
/// ([`global_barrier`]): its ring buffer producers may then publish records
/// with a plain release store. Cleared in a `fork` child, which starts
/// unregistered (registration belongs to the address space).
static GLOBAL_BARRIER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

extern "C" fn forget_global_barrier_in_child() {
    GLOBAL_BARRIER.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// Register this process for `membarrier(GLOBAL_EXPEDITED)` (once; later
/// calls only report). Returns whether it is registered.
pub fn register_global_barrier() -> bool {
    use std::sync::atomic::Ordering;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: membarrier takes no pointers; pthread_atfork gets a
        // handler that only stores to an atomic.
        unsafe {
            if libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0 {
                libc::pthread_atfork(None, None, Some(forget_global_barrier_in_child));
                GLOBAL_BARRIER.store(true, Ordering::Release);
            }
        }
    });
    GLOBAL_BARRIER.load(Ordering::Acquire)
}

/// Whether [`register_global_barrier`] succeeded in this very process.
#[inline(always)]
pub fn global_barrier_registered() -> bool {
    GLOBAL_BARRIER.load(std::sync::atomic::Ordering::Relaxed)
}

/// A full memory barrier on every running thread of every registered
/// process: the slow side of an asymmetric Dekker handshake (a consumer
/// about to sleep), whose fast side (producers) then needs no fence.
pub fn global_barrier() {
    // SAFETY: membarrier takes no pointers. A failure only means no
    // process registered, whose producers then fence themselves.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) };
}

/// `FUTEX_WAKE` all waiters on a shared word.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: word is a valid, aligned u32.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
    }
}

/// A monotonic coarse clock in nanoseconds (vDSO, no syscall).
pub fn monotonic_ns() -> u64 {
    // SAFETY: zeroed timespec is a valid out-buffer.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn page_size() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Random 64 bits (per-map hash seeds, temp names).
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: writes at most 8 bytes into v.
    let n = unsafe { libc::getrandom(&mut v as *mut u64 as *mut _, 8, 0) };
    if n != 8 {
        v = monotonic_ns() ^ (std::process::id() as u64) << 32;
    }
    v
}

/// Process-local detector of a shared position that stopped moving: a
/// consumer or producer blocked behind a record whose writer may have died
/// calls [`Stall::stuck_for_long`] and only checks the writer's liveness
/// (syscalls) once the same position was seen blocked for a while.
#[derive(Default)]
pub struct Stall {
    pos: std::sync::atomic::AtomicU64,
    since_ns: std::sync::atomic::AtomicU64,
}

impl Stall {
    /// Time a position must stay blocked before liveness is checked.
    const PATIENCE_NS: u64 = 1_000_000;

    /// Records that `pos` is blocked now; true once it was blocked for
    /// longer than the patience.
    pub fn stuck_for_long(&self, pos: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = monotonic_ns();
        if self.pos.load(Relaxed) != pos.wrapping_add(1) {
            self.pos.store(pos.wrapping_add(1), Relaxed);
            self.since_ns.store(now, Relaxed);
            return false;
        }
        now.saturating_sub(self.since_ns.load(Relaxed)) >= Self::PATIENCE_NS
    }
}
