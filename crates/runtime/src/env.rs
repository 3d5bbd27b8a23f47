//! The per-run environment: what a helper learns about the current probe
//! hit beyond its five arguments. The VM passes the pointer given to `run`
//! through untouched as the helpers' sixth argument (`env`).

use std::ffi::c_void;

/// Per-hit context built by the caller of a program run (the agent's
/// trampoline handler, or the syscall server's PROG_TEST_RUN) on its own
/// stack. `#[repr(C)]` because the JIT hands it to helpers as a raw pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RunEnv {
    /// `bpf_get_attach_cookie`: the cookie the loader attached with.
    pub cookie: u64,
    /// `bpf_get_func_ip`: address of the probed function (uprobe: the
    /// probed instruction).
    pub func_ip: u64,
    /// Registry id of the program being run.
    pub program_id: u32,
    /// Registry id of the attachment that fired (0 for test runs).
    pub attachment_id: u32,
    /// Opaque pointer to the `LoadedProgram` being run, for helpers that
    /// call back into BPF code (`bpf_loop`, `bpf_for_each_map_elem`).
    pub program: *const c_void,
    /// The run's context (`r1` at entry: the probe's `struct pt_regs`),
    /// set by `LoadedProgram::run`: runtime memory that
    /// `bpf_probe_read_kernel` may read (libbpf's USDT argument fetching
    /// reads registers from it that way).
    pub ctx: u64,
    /// A ring buffer consumer to wake when the run ends (the futex word of
    /// `shm_maps::WakeWord`; null for none), as the kernel wakes it from
    /// irq_work after the program: a loader never sees a record before the
    /// program that wrote it has finished. Reset by `LoadedProgram::run`.
    pub ringbuf_wake: *const std::sync::atomic::AtomicU32,
    /// `bpf_send_signal(_thread)`: the signal to raise when the run ends
    /// (0: none), and whether to the thread only. The kernel queues it at
    /// once and delivers it on the return to user mode, before the probed
    /// instruction runs; raising it after the program does the same here.
    pub pending_signal: u32,
    pub signal_thread: bool,
    /// The run's CPU: the CPU slot `LoadedProgram::run` claimed for a
    /// program that touches per-CPU state, else `shm_maps::cpu::CURRENT`
    /// ("the CPU the thread runs on"). Set by `run` itself — whatever the
    /// caller puts here is overwritten.
    pub cpu: u32,
}

impl RunEnv {
    /// An environment for a run that is not tied to a probe (BEGIN/END).
    pub const fn detached(program_id: u32) -> RunEnv {
        RunEnv {
            cookie: 0,
            func_ip: 0,
            program_id,
            attachment_id: 0,
            program: std::ptr::null(),
            ctx: 0,
            ringbuf_wake: std::ptr::null(),
            pending_signal: 0,
            signal_thread: false,
            cpu: shm_maps::cpu::CURRENT,
        }
    }

    /// Recover the environment from a helper's `env` argument.
    ///
    /// # Safety
    /// `env` must be null or point to a live `RunEnv` (it is whatever the
    /// caller of the run passed).
    #[inline]
    pub unsafe fn from_helper_arg<'a>(env: *mut c_void) -> Option<&'a RunEnv> {
        (env as *const RunEnv).as_ref()
    }

    /// Keep `wake` for the end of the run; a different ring's consumer
    /// already kept is woken now (one word is kept, rings rarely mix).
    pub fn defer_ringbuf_wake(&mut self, wake: shm_maps::WakeWord) {
        if self.ringbuf_wake != wake.as_ptr() {
            // SAFETY: a kept word comes from `WakeWord::as_ptr` of a ring
            // this run's program holds.
            if let Some(previous) = unsafe { shm_maps::WakeWord::from_ptr(self.ringbuf_wake) } {
                previous.wake();
            }
            self.ringbuf_wake = wake.as_ptr();
        }
    }

    /// Wake the consumer kept by [`RunEnv::defer_ringbuf_wake`], if any.
    pub fn finish_ringbuf_wake(&mut self) {
        // SAFETY: as in `defer_ringbuf_wake`; the run's maps are still held.
        if let Some(w) = unsafe { shm_maps::WakeWord::from_ptr(self.ringbuf_wake) } {
            self.ringbuf_wake = std::ptr::null();
            w.wake();
        }
    }

    /// Raise the signal a `bpf_send_signal(_thread)` asked for, if any.
    pub fn finish_pending_signal(&mut self) {
        let sig = std::mem::take(&mut self.pending_signal);
        if sig == 0 {
            return;
        }
        let pid = preload::raw::getpid();
        if self.signal_thread {
            preload::raw::tgkill(pid, preload::raw::gettid(), sig as libc::c_int);
        } else {
            preload::raw::kill(pid, sig as libc::c_int);
        }
    }

    /// The run's CPU from a helper's `env` argument (`cpu::CURRENT` when
    /// there is no environment).
    ///
    /// # Safety
    /// As for [`RunEnv::from_helper_arg`].
    #[inline(always)]
    pub unsafe fn cpu_from_helper_arg(env: *mut c_void) -> u32 {
        // SAFETY: forwarded caller contract.
        unsafe { RunEnv::from_helper_arg(env) }.map_or(shm_maps::cpu::CURRENT, |e| e.cpu)
    }
}
