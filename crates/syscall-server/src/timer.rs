//! `interval:` and `profile:` probes: `PERF_COUNT_SW_CPU_CLOCK` perf events.
//!
//! An `interval:` event runs its program in the loader, on a timer thread,
//! once per period, with zeroed registers and the real `sample_period` in
//! its context (`struct bpf_perf_event_data`): counters, printing and
//! `exit()` behave as under the kernel.
//!
//! A `profile:` event samples the traced processes: it becomes a registry
//! link (`LinkKind::PerfEvent`, with its CPU and period in nanoseconds), and
//! every agent samples its own threads on their CPU time and runs the
//! program there, with the interrupted registers (`agent/src/sampler.rs`).
//! The two open alike (bpftrace opens `interval:` on CPU 0 and `profile:`
//! on every CPU, both with a period or a frequency), so an event is a
//! sampler once a program is bound to it and to an event of another CPU,
//! or when the program is named `profile_…` (bpftrace 0.20+); an event
//! already started as a loader timer is then converted (`perf.rs`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `sizeof(struct bpf_perf_event_data)` on x86-64: pt_regs + period + addr.
const PERF_EVENT_CTX_SIZE: usize = 21 * 8 + 16;
const SAMPLE_PERIOD_OFFSET: usize = 21 * 8;

pub struct TimerEvent {
    /// Nanoseconds between runs.
    period: Duration,
    sample_period: u64,
    /// The CPU the event was opened on (-1: any); the timer thread is
    /// pinned there so the program's `cpu` is the CPU it was opened for.
    cpu: i32,
    prog_id: AtomicU32,
    /// The bound program, kept alive while the event exists.
    prog: Mutex<Option<Arc<crate::objects::Object>>>,
    /// Set while the timer thread should keep running.
    running: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Only this pid (the attr's `pid`), -1 for every process.
    pid: i32,
    enabled: AtomicBool,
    /// Set when the event samples the traced apps (see the module docs).
    in_app: Mutex<Option<crate::backend::Attachment>>,
}

/// `kernel.perf_event_max_sample_rate` (the kernel's default when unreadable).
fn max_sample_rate() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100_000)
}

impl TimerEvent {
    /// `sample`: the attr's period in ns, or a frequency in Hz when `freq`.
    pub fn new(sample: u64, freq: bool, cpu: i32, pid: i32) -> Result<TimerEvent, i32> {
        if sample == 0 {
            return Err(libc::EINVAL);
        }
        // As the kernel's perf_event_open: no frequency above the sysctl.
        if freq && sample > max_sample_rate() {
            return Err(libc::EINVAL);
        }
        let period = if freq {
            Duration::from_nanos(1_000_000_000 / sample.min(1_000_000_000))
        } else {
            Duration::from_nanos(sample)
        };
        Ok(TimerEvent {
            period,
            sample_period: sample,
            cpu,
            prog_id: AtomicU32::new(0),
            prog: Mutex::new(None),
            running: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
            pid,
            enabled: AtomicBool::new(false),
            in_app: Mutex::new(None),
        })
    }

    /// The CPU the event was opened on (-1: any).
    pub fn cpu(&self) -> i32 {
        self.cpu
    }

    /// The program bound to it (0: none yet).
    pub fn program_id(&self) -> u32 {
        self.prog_id.load(Ordering::Acquire)
    }

    /// Make this event sample the traced apps instead of running in the
    /// loader (idempotent): stop the loader's timer, publish the link.
    pub fn sample_in_apps(&self) -> Result<(), i32> {
        let mut in_app = self.in_app.lock().map_err(|_| libc::EIO)?;
        if in_app.is_some() {
            return Ok(());
        }
        self.stop();
        let prog = self.prog.lock().map_err(|_| libc::EIO)?.clone().ok_or(libc::EINVAL)?;
        let attachment = crate::backend::Attachment::new(crate::backend::AttachSpec {
            kind: shm_maps::LinkKind::PerfEvent,
            path: String::new(),
            file_offset: 0,
            ref_ctr_offset: 0,
            pid: self.pid,
            config: crate::abi::perf::PERF_COUNT_SW_CPU_CLOCK,
            sample_period: self.period.as_nanos() as u64,
            cpu: self.cpu,
        });
        attachment.set_program(self.program_id(), prog, 0)?;
        attachment.set_enabled(self.enabled.load(Ordering::Acquire))?;
        *in_app = Some(attachment);
        Ok(())
    }

    pub fn set_program(&self, id: u32, prog: Arc<crate::objects::Object>) -> Result<(), i32> {
        let mut slot = self.prog.lock().map_err(|_| libc::EIO)?;
        if slot.is_some() {
            return Err(libc::EEXIST);
        }
        *slot = Some(prog);
        self.prog_id.store(id, Ordering::Release);
        Ok(())
    }

    pub fn set_enabled(&self, on: bool) -> Result<(), i32> {
        self.enabled.store(on, Ordering::Release);
        if let Some(attachment) = &*self.in_app.lock().map_err(|_| libc::EIO)? {
            return attachment.set_enabled(on);
        }
        if !on {
            self.stop();
            return Ok(());
        }
        let prog = self.prog_id.load(Ordering::Acquire);
        if prog == 0 {
            return Ok(()); // enabled without a program: nothing to run (kernel: counts only)
        }
        let mut slot = self.thread.lock().map_err(|_| libc::EIO)?;
        if slot.is_some() {
            return Ok(());
        }
        self.running.store(true, Ordering::Release);
        let running = self.running.clone();
        let period = self.period;
        let sample_period = self.sample_period;
        let cpu = self.cpu;
        // Signals sent to the loader (Ctrl-C) must reach its own threads,
        // which wait for them in epoll_wait, never a timer thread: create it
        // with every signal blocked (a new thread inherits the mask).
        let blocked = crate::epoll::SignalsBlocked::new();
        let handle = std::thread::Builder::new()
            .name("userbpf-timer".into())
            .spawn(move || timer_loop(prog, period, sample_period, cpu, &running))
            .map_err(|_| libc::EAGAIN);
        drop(blocked);
        *slot = Some(handle?);
        Ok(())
    }

    /// Stop the timer thread (disable or last close) and wait for it, so no
    /// run happens after the loader saw the event disabled.
    pub fn stop(&self) {
        self.running.store(false, Ordering::Release);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for TimerEvent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn timer_loop(prog_id: u32, period: Duration, sample_period: u64, cpu: i32, running: &AtomicBool) {
    crate::interpose::mark_server_thread();
    if cpu >= 0 && (cpu as usize) < libc::CPU_SETSIZE as usize {
        // SAFETY: a zeroed cpu_set_t with one bit set, for this thread only.
        // Failure (CPU offline, cgroup limits) just leaves the thread unpinned.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    let mut next = Instant::now() + period;
    let mut ctx = [0u8; PERF_EVENT_CTX_SIZE];
    ctx[SAMPLE_PERIOD_OFFSET..SAMPLE_PERIOD_OFFSET + 8]
        .copy_from_slice(&sample_period.to_ne_bytes());
    while running.load(Ordering::Acquire) {
        let now = Instant::now();
        if now < next {
            // Sleep in short slices so a disable is honoured promptly.
            std::thread::sleep((next - now).min(Duration::from_millis(20)));
            continue;
        }
        next += period;
        if next < now {
            next = now + period; // fell behind (suspended): do not burst
        }
        // SAFETY: `ctx` is a full bpf_perf_event_data, the program type's context.
        if let Err(e) = unsafe { crate::loader_run::run_program(prog_id, ctx.as_mut_ptr()) } {
            crate::report::line(&format!(
                "userbpf: interval/profile program {prog_id} failed to run (errno {e})"
            ));
            return;
        }
    }
}
