//! The real libc functions behind every symbol the server interposes,
//! looked up once with `dlsym(RTLD_NEXT, …)` and cached in atomics.
//!
//! Lookups never allocate from our side; glibc's `dlsym` may call `calloc`,
//! which we do not interpose, so bootstrapping cannot recurse into us.

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Resolve `name` (NUL-terminated) in the next object after us, caching it.
fn resolve(cache: &AtomicUsize, name: &'static [u8]) -> usize {
    let cached = cache.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    // SAFETY: `name` is a NUL-terminated static string; RTLD_NEXT is valid in
    // a shared object and returns the definition after ours in lookup order.
    let sym = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) } as usize;
    if sym == 0 {
        // Without the real function nothing can be forwarded: this is a broken
        // process image, not a recoverable condition.
        let msg = b"userbpf syscall server: dlsym(RTLD_NEXT) failed for a libc symbol\n";
        // SAFETY: writing a static buffer to stderr.
        unsafe {
            libc::write(2, msg.as_ptr() as *const c_void, msg.len());
            libc::abort();
        }
    }
    cache.store(sym, Ordering::Release);
    sym
}

macro_rules! real_fn {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        #[allow(clippy::missing_safety_doc)]
        pub unsafe fn $name($($arg: $ty),*) -> $ret {
            static CACHE: AtomicUsize = AtomicUsize::new(0);
            let f = resolve(&CACHE, concat!(stringify!($name), "\0").as_bytes());
            // SAFETY: `f` is the address of libc's function of this name,
            // whose C signature is the one declared here.
            let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(f) };
            unsafe { f($($arg),*) }
        }
    )*};
}

real_fn! {
    fn syscall(n: c_long, a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long;
    fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE;
    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE;
    fn access(path: *const c_char, mode: c_int) -> c_int;
    fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: libc::off_t) -> *mut c_void;
    fn mmap64(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: libc::off_t) -> *mut c_void;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut libc::epoll_event) -> c_int;
    fn epoll_wait(epfd: c_int, events: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int;
    fn epoll_pwait(epfd: c_int, events: *mut libc::epoll_event, max: c_int, timeout: c_int, mask: *const libc::sigset_t) -> c_int;
    fn geteuid() -> libc::uid_t;
    fn capget(hdr: *mut c_void, data: *mut c_void) -> c_int;
    fn setrlimit(resource: c_int, rlim: *const libc::rlimit) -> c_int;
    fn setrlimit64(resource: c_int, rlim: *const libc::rlimit) -> c_int;
    fn prlimit64(pid: libc::pid_t, resource: c_int, new: *const libc::rlimit, old: *mut libc::rlimit) -> c_int;
}
