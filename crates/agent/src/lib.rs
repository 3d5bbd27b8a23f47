//! `libagent.so`, preloaded into traced applications (`LD_PRELOAD`): joins
//! the userbpf registry, attaches the programs loaders ask for to this
//! process's functions through the rewriter, and runs them in-process.
//!
//! Life cycle:
//! - **load**: an `.init_array` constructor (`agent_constructor`) reads
//!   the configuration ([`config`]), opens the registry, installs the
//!   fault and fork handlers of the runtime, attaches what is already
//!   enabled when preloaded (a late `dlopen` leaves that to the watcher), and
//!   starts the watcher thread ([`watcher`]). If the registry is unusable it
//!   prints one line (unless `USERBPF_QUIET=1`) and stays inert.
//!   [`signals`] keeps the fault handler first if the application installs
//!   its own SIGSEGV/SIGBUS handler later.
//! - **hits**: the rewriter's trampoline calls [`probes`]' handler, which
//!   runs the JIT'd program: no allocation, lock or system call.
//! - **fork**: the child inherits the patched code and probes; a
//!   `pthread_atfork` child handler starts a new watcher (which drops probes
//!   whose pid filter excludes the child; the filter is also checked on
//!   every hit). The runtime's own handler resets its pid caches.
//! - **exec**: `LD_PRELOAD` is inherited, so the new image loads the agent
//!   afresh.
//!
//! Nothing here may crash or alter the application: every entry point from
//! C catches panics, the watcher thread blocks every asynchronous signal,
//! and failures are reported, never raised.
//!
//! The agent's own work is invisible to probes: the constructor, the
//! watcher thread, the fork handler and the detach/reattach entry points
//! run with `rewriter::suppress_probes_on_this_thread`, so their calls to
//! probed functions (`malloc`, `read`, `getpid`…) are neither counted as
//! the application's nor able to recurse into the patching they are part
//! of. The watcher keeps the synchronous signals the rewriter and runtime
//! handle (SIGTRAP, SIGSEGV, SIGBUS, SIGILL, SIGFPE) unblocked: a
//! breakpoint it meets in a function it calls while that function is being
//! patched is then handled (and skipped), where a blocked SIGTRAP would
//! make the kernel kill the process.

// This build's identity, read by `userbpf` from the file (`--version`, and
// the check that it speaks the CLI's registry layout).
buildinfo::stamp!(shm_maps::LAYOUT_VERSION);

pub mod config;
pub mod log;
pub mod probes;
pub mod sampler;
pub mod signals;
pub mod watcher;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use shm_maps::Registry;

static STARTED: AtomicBool = AtomicBool::new(false);
/// Nanoseconds the constructor took (reported with `USERBPF_AGENT_DEBUG`).
static STARTUP_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The loader runs `.init_array` entries when the library is loaded.
#[used]
#[link_section = ".init_array"]
static AGENT_CONSTRUCTOR: extern "C" fn() = agent_constructor;

extern "C" fn agent_constructor() {
    if !loaded_as_shared_library() {
        // Linked statically (the crate's own tests and benchmarks use the
        // rlib): the embedder calls `start()` itself, or not at all.
        return;
    }
    if std::panic::catch_unwind(start).is_err() {
        log::warn("internal error while starting; the agent stays inert");
    }
}

/// Whether this code runs from a shared object (`libagent.so`) rather than
/// linked into an executable.
fn loaded_as_shared_library() -> bool {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only inspects the loader's tables; `info` is ours.
    let found = unsafe { libc::dladdr(agent_constructor as *const () as *const libc::c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return true;
    }
    // SAFETY: dladdr returned a NUL-terminated name owned by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_bytes();
    name.ends_with(b".so") || name.windows(4).any(|w| w == b".so.")
}

/// Start the agent once per process image. Public so tests and embedders
/// that link the agent statically can start it explicitly.
pub fn start() {
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    // Runs on the application's main thread, after the first probes may
    // already be live: none of this is the application's work.
    let _quiet = rewriter::suppress_probes_on_this_thread();
    let began = Instant::now();
    let config = config::Config::from_env();
    log::configure(config.quiet, config.debug);
    if config.disabled {
        return;
    }
    let registry = match &config.registry_dir {
        Some(dir) => Registry::open(dir),
        None => Registry::open_default(),
    };
    let registry = match registry {
        Ok(r) => r,
        Err(e) => {
            log::warn(&format!("registry unusable, probes disabled in this process: {e}"));
            return;
        }
    };
    let registry_opened = began.elapsed();
    // Fault and fork handlers only; the slow caches (uid/gid, cgroup) are
    // filled by the watcher, off the application's start-up path.
    if let Err(e) = runtime::init_process() {
        log::warn(&format!("{e}; probe reads fall back to process_vm_readv"));
    }
    open_trace_sink(&registry);
    {
        let mut agent = watcher::Agent::new(registry);
        // Preloaded: attach before `main` so no early call is missed. Loaded
        // late (`userbpf attach` borrows a stopped app thread to dlopen us):
        // return at once and let the watcher attach.
        if preloaded() {
            agent.reconcile();
        }
        *watcher::lock_state() = Some(agent);
    }
    let reconciled = began.elapsed();
    install_fork_handlers();
    spawn_watcher();
    let nanos = began.elapsed().as_nanos() as u64;
    STARTUP_NANOS.store(nanos, Ordering::Relaxed);
    log::debug(|| {
        format!(
            "started in {} µs (registry open {} µs, first reconcile done at {} µs)",
            nanos / 1000,
            registry_opened.as_micros(),
            reconciled.as_micros()
        )
    });
}

/// Whether this library was loaded through `LD_PRELOAD` (at start-up)
/// rather than `dlopen`ed into a running process.
pub(crate) fn preloaded() -> bool {
    std::env::var_os("LD_PRELOAD")
        .is_some_and(|v| v.to_string_lossy().split([':', ' ']).any(|entry| entry.ends_with("libagent.so")))
}

/// Remove every probe of this process (patch sites restored) and attach no
/// new ones until [`userbpf_agent_reattach`]. Returns the number of probes
/// removed, or a negative errno (`-ENODEV`: the agent is not running here).
/// Trampolines and JIT code stay mapped: a thread may still be inside them.
#[no_mangle]
pub extern "C" fn userbpf_agent_detach() -> i32 {
    std::panic::catch_unwind(|| {
        let _quiet = rewriter::suppress_probes_on_this_thread();
        let mut state = watcher::lock_state();
        match state.as_mut() {
            Some(agent) => agent.suspend() as i32,
            None => -libc::ENODEV,
        }
    })
    .unwrap_or(-libc::EIO)
}

/// Undo [`userbpf_agent_detach`]: attach every matching registry link
/// again, now. Returns how many probes are attached, or `-ENODEV` if the
/// agent is not running.
#[no_mangle]
pub extern "C" fn userbpf_agent_reattach() -> i32 {
    std::panic::catch_unwind(|| {
        let _quiet = rewriter::suppress_probes_on_this_thread();
        let mut state = watcher::lock_state();
        match state.as_mut() {
            Some(agent) => {
                agent.resume();
                agent.reconcile();
                agent.attached_count() as i32
            }
            None => -libc::ENODEV,
        }
    })
    .unwrap_or(-libc::EIO)
}

/// How long the constructor took, in nanoseconds (0 if it did not run).
pub fn startup_nanos() -> u64 {
    STARTUP_NANOS.load(Ordering::Relaxed)
}

/// `bpf_trace_printk` output goes to `<registry>/trace_pipe`.
fn open_trace_sink(registry: &Registry) {
    use std::os::unix::ffi::OsStrExt;
    let path = registry.dir().join("trace_pipe");
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return };
    // SAFETY: opening a NUL-terminated path.
    let fd = unsafe {
        libc::open(c_path.as_ptr(), libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC, 0o600)
    };
    if fd >= 0 {
        runtime::helpers::format::set_trace_sink(fd);
    }
}

/// The signals the watcher thread keeps unblocked: the synchronous ones
/// that userbpf's own handlers resolve (breakpoints, faults in probe reads)
/// and that the kernel delivers by force, killing the process, when they
/// are blocked.
const SYNCHRONOUS_SIGNALS: [libc::c_int; 5] = [libc::SIGTRAP, libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];

/// Start the watcher with every asynchronous signal blocked, so the
/// application's signals are never delivered to (and handled on) the
/// agent's thread. The mask is set before the thread exists (it inherits
/// it), so the spawning code runs with the same mask: it calls `malloc`
/// and `pthread_create`, which may carry probes.
///
/// A bare `pthread_create`, not `std::thread`: std runs its own set-up in
/// the new thread (signal stack `mmap`, `sigaltstack`, thread name) before
/// the closure could suppress probes, and those calls would be counted as
/// the application's. Here the first instruction of the thread's own code
/// suppresses them; only glibc's `start_thread` runs before it.
fn spawn_watcher() {
    extern "C" fn watcher_thread(_: *mut libc::c_void) -> *mut libc::c_void {
        // Everything this thread does is the agent's, for its whole life.
        let _quiet = rewriter::suppress_probes_on_this_thread();
        // SAFETY: naming the calling thread with a NUL-terminated name of
        // at most 15 bytes.
        unsafe { libc::pthread_setname_np(libc::pthread_self(), c"userbpf-agent".as_ptr()) };
        if std::panic::catch_unwind(watcher::run).is_err() {
            log::warn("internal error in the watcher; probes stay as they are");
        }
        std::ptr::null_mut()
    }
    // SAFETY: sigset and thread-attribute manipulation on locals; the old
    // mask is restored; the thread routine takes no argument.
    let rc = unsafe {
        let mut blocked: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut blocked);
        for signal in SYNCHRONOUS_SIGNALS {
            libc::sigdelset(&mut blocked, signal);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &blocked, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::pthread_attr_setstacksize(&mut attr, WATCHER_STACK);
        let mut thread: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut thread, &attr, watcher_thread, std::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        rc
    };
    if rc != 0 {
        log::warn(&format!("cannot start the watcher thread: {}", std::io::Error::from_raw_os_error(rc)));
    }
}

/// The watcher's stack, as `std::thread` would give it.
const WATCHER_STACK: usize = 2 << 20;

/// The state lock is held across `fork` so the child never inherits it
/// locked by a thread that does not exist there.
static mut FORK_GUARD: Option<std::sync::MutexGuard<'static, Option<watcher::Agent>>> = None;

extern "C" fn before_fork() {
    let guard = watcher::lock_state();
    // SAFETY: only the forking thread touches FORK_GUARD, between its own
    // prepare and parent/child handlers.
    unsafe { *std::ptr::addr_of_mut!(FORK_GUARD) = Some(guard) };
}

extern "C" fn after_fork_parent() {
    // SAFETY: as in `before_fork`.
    unsafe { *std::ptr::addr_of_mut!(FORK_GUARD) = None };
}

extern "C" fn after_fork_child() {
    // SAFETY: as in `before_fork`; the child has only this thread.
    unsafe { *std::ptr::addr_of_mut!(FORK_GUARD) = None };
    // (The runtime's own fork handler resets its pid caches.)
    let restarted = std::panic::catch_unwind(|| {
        let mut state = watcher::lock_state();
        if let Some(agent) = state.as_mut() {
            agent.after_fork();
            drop(state);
            spawn_watcher();
        }
    });
    if restarted.is_err() {
        log::warn("internal error restarting the watcher after fork");
    }
}

fn install_fork_handlers() {
    // SAFETY: registering plain extern "C" functions.
    let rc = unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child)) };
    if rc != 0 {
        log::warn("cannot register fork handlers; a forked child will not follow probe changes");
    }
}
