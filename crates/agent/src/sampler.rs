//! `profile:` probes inside the traced process: every thread of the app
//! samples itself on its own CPU time, and the program runs on the
//! interrupted thread with its registers, so `ustack`, `ip`, `pid`, `tid`
//! and `comm` are the app's.
//!
//! The kernel's `profile:hz:N` is one cpu-clock perf event per CPU, firing
//! N times per second of whatever runs there; the loader opens one per CPU
//! (the server publishes each as a `PerfEvent` link with its CPU and
//! period). Here each thread gets one POSIX timer per distinct period, on
//! its own CPU-time clock (`timer_create` on the thread's CPU clock with
//! `SIGEV_THREAD_ID`): it expires after every period of CPU time the thread
//! used, so a thread is sampled as often as the kernel samples it. A tick
//! runs the links of that period whose CPU is the one the thread is on (or
//! any CPU), which gives each process the counts the kernel gives it.
//!
//! The timers deliver the rewriter's own real-time signal, tagged
//! ([`rewriter::sampling_signal`]): the rewriter runs [`on_sample`] in probe
//! context, so a tick on a thread that is inside a probe, or in the agent's
//! own code, is skipped and counted; errno is restored; `SA_RESTART` keeps
//! the app's system calls going. An application handler of that signal
//! keeps working (it is chained). A thread created later gets its timers at
//! the watcher's next tick (at most [`crate::watcher::TICK`]); the watcher
//! thread itself is never sampled. Nothing is armed while no `profile:`
//! link targets the process.
//!
//! Lifetime: the set of samplers is published through one pointer; a new
//! set replaces it, [`rewriter::synchronize`] waits out ticks in flight,
//! and only then is the old set (and its programs) freed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use rewriter::PtRegs;
use runtime::{LoadedProgram, RunEnv};

/// One `profile:` link live in this process.
pub struct Sampler {
    pub link_id: u32,
    /// Run only on this CPU (-1: any), as the kernel's per-CPU event.
    pub cpu: i32,
    /// Only fire in this process (-1: any).
    pub pid_filter: i32,
    /// Period of CPU time between ticks, in microseconds (the timer's tag).
    pub period_us: u32,
    pub program: Arc<LoadedProgram>,
    /// Samples taken (published in the agent's status).
    pub hits: std::sync::atomic::AtomicU64,
}

struct SamplerSet {
    samplers: Vec<Sampler>,
}

static CURRENT: AtomicPtr<SamplerSet> = AtomicPtr::new(std::ptr::null_mut());

/// Samples one tick may stand for (see `on_sample`).
const MAX_EXPIRATIONS_PER_TICK: u32 = 16;
/// Shortest period sampled: 10 kHz (the kernel's default
/// `perf_event_max_sample_rate` is 100 kHz, but CPU-time timers fire at the
/// scheduler tick anyway, and each tick costs the app microseconds).
pub const MIN_PERIOD_US: u32 = 100;

/// `struct bpf_perf_event_data`: what a `profile:` program reads.
#[repr(C)]
struct PerfEventData {
    regs: PtRegs,
    sample_period: u64,
    addr: u64,
}

/// The tick handler (see the module docs). Async-signal-safe: it reads the
/// published set and runs JIT'd programs, which allocate nothing.
unsafe extern "C" fn on_sample(regs: *mut PtRegs, period_us: u32, expirations: u32) {
    let set = CURRENT.load(Ordering::Acquire);
    // SAFETY: a published set lives until a grace period after it is
    // replaced, and this runs in probe context (see the rewriter).
    let Some(set) = (unsafe { set.as_ref() }) else {
        return;
    };
    let cpu = shm_maps::cpu::current() as i32;
    let mut ctx = PerfEventData {
        // SAFETY: the rewriter passes the interrupted thread's registers.
        regs: unsafe { *regs },
        sample_period: period_us as u64 * 1000,
        addr: 0,
    };
    for s in &set.samplers {
        if s.period_us != period_us || (s.cpu >= 0 && s.cpu != cpu) {
            continue;
        }
        if s.pid_filter >= 0 && runtime::helpers::task::current_tgid() != s.pid_filter as u32 {
            continue;
        }
        let mut env = RunEnv {
            cookie: 0,
            func_ip: 0,
            program_id: s.program.id(),
            attachment_id: s.link_id,
            program: Arc::as_ptr(&s.program) as *const std::ffi::c_void,
            ctx: 0,
            ringbuf_wake: std::ptr::null(),
            pending_signal: 0,
            signal_thread: false,
            cpu: shm_maps::cpu::CURRENT,
        };
        // SAFETY: the program was verified for a perf-event context, which
        // `ctx` is; it stays alive with the set. A panic must not unwind
        // into the signal handler.
        // One signal may stand for several expirations (CPU-time timers
        // fire at most once per scheduler tick): each is a sample, as each
        // is one on the kernel's hrtimer-driven cpu-clock (bounded, so a
        // thread that was long descheduled does not pay for a burst).
        let runs = expirations.clamp(1, MAX_EXPIRATIONS_PER_TICK);
        s.hits.fetch_add(runs as u64, Ordering::Relaxed);
        for _ in 0..runs {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                s.program.run(&mut ctx as *mut PerfEventData as *mut u8, &mut env)
            }));
        }
    }
}

/// The watcher's side: which samplers are live and the per-thread timers.
#[derive(Default)]
pub struct Samplers {
    /// Link ids of the published set.
    live: Vec<u32>,
    periods: Vec<u32>,
    timers: HashMap<(i32, u32), usize>,
}

/// The kernel's clock id of thread `tid`'s CPU time (`MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`).
fn thread_cpu_clock(tid: i32) -> libc::clockid_t {
    ((!tid) << 3) | 6
}

impl Samplers {
    /// Whether any sampler is live.
    pub fn active(&self) -> bool {
        !self.live.is_empty()
    }

    /// Link ids of the live samplers.
    pub fn link_ids(&self) -> &[u32] {
        &self.live
    }

    /// Samples taken per live link.
    pub fn hits(&self) -> Vec<(u32, u64)> {
        let set = CURRENT.load(Ordering::Acquire);
        // SAFETY: only the watcher (the caller) replaces and frees the set.
        match unsafe { set.as_ref() } {
            Some(set) => set.samplers.iter().map(|s| (s.link_id, s.hits.load(Ordering::Relaxed))).collect(),
            None => Vec::new(),
        }
    }

    /// Publish `samplers` (replacing the previous set once no tick uses it)
    /// and arm or disarm the threads' timers accordingly.
    pub fn set(&mut self, samplers: Vec<Sampler>) {
        let mut ids: Vec<u32> = samplers.iter().map(|s| s.link_id).collect();
        ids.sort_unstable();
        if ids == self.live {
            self.sync_threads();
            return;
        }
        let kept = self.hits();
        for s in &samplers {
            if let Some((_, n)) = kept.iter().find(|(id, _)| *id == s.link_id) {
                s.hits.store(*n, Ordering::Relaxed);
            }
        }
        let mut periods: Vec<u32> = samplers.iter().map(|s| s.period_us).collect();
        periods.sort_unstable();
        periods.dedup();
        let new = if samplers.is_empty() {
            std::ptr::null_mut()
        } else {
            Box::into_raw(Box::new(SamplerSet { samplers }))
        };
        if !new.is_null() {
            // The tick must not be the first call of these in a thread:
            // their first calls look things up (dlsym) or allocate.
            let _ = shm_maps::cpu::current();
            let _ = runtime::helpers::task::current_tgid();
            if !crate::preloaded() {
                // dlopen'ed: this library's thread-local storage is allocated
                // on each thread's first use, under the C library's and the
                // dynamic loader's locks: no first tick inside those.
                rewriter::set_sampling_unsafe_ranges(&libc_and_loader_text());
            }
            // SAFETY: on_sample is async-signal-safe and never unwinds.
            unsafe { rewriter::set_sample_handler(Some(on_sample)) };
        }
        let old = CURRENT.swap(new, Ordering::AcqRel);
        self.live = ids;
        self.periods = periods;
        self.sync_threads();
        if !old.is_null() {
            rewriter::synchronize();
            // SAFETY: `old` came from Box::into_raw and no tick uses it any more.
            drop(unsafe { Box::from_raw(old) });
        }
    }

    /// Arms a timer per thread and period, deletes those of threads gone
    /// and of periods no longer sampled.
    pub fn sync_threads(&mut self) {
        let me = preload::raw::gettid();
        let threads: Vec<i32> = if self.periods.is_empty() {
            Vec::new()
        } else {
            match std::fs::read_dir("/proc/self/task") {
                Ok(d) => d
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|&t| t != me)
                    .collect(),
                Err(e) => {
                    crate::log::warn(&format!(
                        "cannot list this process's threads for profile: {e}"
                    ));
                    return;
                }
            }
        };
        // A thread that blocks the signal may be waiting for it (sigwait,
        // signalfd): it would take the tick as its own. Not sampled.
        let wanted: std::collections::HashSet<(i32, u32)> = threads
            .iter()
            .filter(|&&t| !rewriter::thread_blocks_sampling(t))
            .flat_map(|&t| self.periods.iter().map(move |&p| (t, p)))
            .collect();
        self.timers.retain(|key, timer| {
            let keep = wanted.contains(key);
            if !keep {
                // SAFETY: a timer this process created and has not deleted.
                unsafe { libc::timer_delete(*timer as libc::timer_t) };
            }
            keep
        });
        for (tid, period_us) in wanted {
            if self.timers.contains_key(&(tid, period_us)) {
                continue;
            }
            match arm(tid, period_us) {
                Ok(timer) => {
                    self.timers.insert((tid, period_us), timer);
                }
                // The thread exited meanwhile: nothing to sample.
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        || e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => crate::log::warn(&format!(
                    "cannot arm the profile timer of thread {tid}: {e}"
                )),
            }
        }
    }

    /// In a forked child: timers are not inherited.
    pub fn after_fork(&mut self) {
        self.timers.clear();
    }
}

/// The executable code of the C library and the dynamic loader here.
fn libc_and_loader_text() -> Vec<(usize, usize)> {
    let Ok(maps) = rewriter::maps::read_self_maps() else { return Vec::new() };
    maps.iter()
        .filter(|m| m.executable)
        .filter(|m| {
            let name = m.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("libc.so") || name.starts_with("ld-linux") || name.starts_with("libc-")
        })
        .map(|m| (m.start, m.end))
        .take(8)
        .collect()
}

/// A timer on `tid`'s CPU time, every `period_us`, signalling `tid`.
fn arm(tid: i32, period_us: u32) -> std::io::Result<usize> {
    let (signal, value) = rewriter::sampling_signal(period_us);
    // SAFETY: an all-zero sigevent is valid; the fields are set below.
    let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
    event.sigev_notify = libc::SIGEV_THREAD_ID;
    event.sigev_signo = signal;
    event.sigev_value = libc::sigval {
        sival_ptr: value as usize as *mut libc::c_void,
    };
    event.sigev_notify_thread_id = tid;
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: valid pointers to a sigevent and a timer_t.
    if unsafe { libc::timer_create(thread_cpu_clock(tid), &mut event, &mut timer) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let period = libc::timespec {
        tv_sec: (period_us / 1_000_000) as i64,
        tv_nsec: (period_us % 1_000_000) as i64 * 1000,
    };
    let spec = libc::itimerspec {
        it_interval: period,
        it_value: period,
    };
    // SAFETY: `timer` was just created; `spec` is a valid itimerspec.
    if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { libc::timer_delete(timer) };
        return Err(e);
    }
    Ok(timer as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_of_this_thread_is_its_cpu_time() {
        let tid = preload::raw::gettid();
        let mut a = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut b = a;
        // SAFETY: valid timespec pointers.
        unsafe {
            assert_eq!(libc::clock_gettime(thread_cpu_clock(tid), &mut a), 0);
            assert_eq!(
                libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut b),
                0
            );
        }
        let (a, b) = (
            a.tv_sec as f64 + a.tv_nsec as f64 / 1e9,
            b.tv_sec as f64 + b.tv_nsec as f64 / 1e9,
        );
        assert!((b - a).abs() < 0.01, "{a} vs {b}");
    }
}
