//! Map element helpers: straight to the shm-maps program view (no lock
//! beyond the map's own bounded ones, no allocation, no system call).
//! `r1` is the address of the process-local map handle the program's `lddw`
//! was resolved to (see `crate::program`).

use std::ffi::c_void;

use crate::env::RunEnv;
use crate::maps::MapHandle;

/// # Safety
/// `map` is a handle address baked into a verified program.
#[inline(always)]
unsafe fn map<'a>(map: u64) -> &'a MapHandle {
    // SAFETY: the program keeps its maps alive (LoadedProgram::_maps).
    unsafe { &*(map as *const MapHandle) }
}

/// `bpf_map_lookup_elem(map, key)`: value pointer or 0. Per-CPU maps give
/// the value of the run's CPU (its claimed CPU slot, see `RunEnv::cpu`).
pub unsafe extern "C" fn map_lookup_elem(m: u64, key: u64, _: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: `env` is the RunEnv (or null) the caller passed to run; the
    // verifier proved `key` readable for key_size bytes.
    unsafe { map(m).prog_lookup_on_cpu(key as *const u8, RunEnv::cpu_from_helper_arg(env)) as u64 }
}

/// `bpf_map_lookup_percpu_elem(map, key, cpu)`: CPU `cpu`'s value of a
/// per-CPU map (bpftrace 0.20+ reads per-CPU counters with it), null for a
/// CPU that does not exist, as the kernel.
pub unsafe extern "C" fn map_lookup_percpu_elem(m: u64, key: u64, cpu: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // The kernel's cpu argument is a u32.
    let cpu = u64::from(cpu as u32);
    if cpu >= shm_maps::cpu::nr_possible() as u64 {
        return 0;
    }
    // SAFETY: the verifier proved `key` readable for key_size bytes and the
    // map per-CPU; `cpu` is a valid slot.
    unsafe { map(m).prog_lookup_on_cpu(key as *const u8, cpu as u32) as u64 }
}

/// `bpf_map_update_elem(map, key, value, flags)` (per-CPU maps: the run's
/// CPU's value).
pub unsafe extern "C" fn map_update_elem(m: u64, key: u64, value: u64, flags: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: `env` is the RunEnv (or null) the caller passed to run; the
    // verifier proved key/value readable for their sizes.
    unsafe { map(m).prog_update_on_cpu(key as *const u8, value as *const u8, flags, RunEnv::cpu_from_helper_arg(env)) as u64 }
}

/// `bpf_map_delete_elem(map, key)`.
pub unsafe extern "C" fn map_delete_elem(m: u64, key: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `key` readable for key_size bytes.
    unsafe { map(m).prog_delete(key as *const u8) as u64 }
}

/// `bpf_map_push_elem(map, value, flags)` (queue/stack).
pub unsafe extern "C" fn map_push_elem(m: u64, value: u64, flags: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `value` readable for value_size bytes.
    unsafe { map(m).prog_push(value as *const u8, flags) as u64 }
}

/// `bpf_map_pop_elem(map, value)` (queue/stack).
pub unsafe extern "C" fn map_pop_elem(m: u64, value: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `value` writable for value_size bytes.
    unsafe { map(m).prog_pop(value as *mut u8) as u64 }
}

/// `bpf_map_peek_elem(map, value)` (queue/stack).
pub unsafe extern "C" fn map_peek_elem(m: u64, value: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `value` writable for value_size bytes.
    unsafe { map(m).prog_peek(value as *mut u8) as u64 }
}

/// `bpf_perf_event_output(ctx, map, flags, data, size)`: one
/// `PERF_RECORD_SAMPLE` into the perf ring stored in the PERF_EVENT_ARRAY
/// slot chosen by `flags` (`BPF_F_CURRENT_CPU` or an index).
pub unsafe extern "C" fn perf_event_output(_ctx: u64, m: u64, flags: u64, data: u64, size: u64, _: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `data` readable for `size` bytes.
    let bytes = unsafe { super::guest_bytes(data, size) };
    // SAFETY: `m` is a map handle baked into the verified program.
    unsafe { map(m).perf_event_output(flags, bytes) as u64 }
}

/// `bpf_get_stackid(ctx, map, flags)`: walk the user stack
/// (`BPF_F_USER_STACK`; without it there is no kernel stack here and the
/// result is `-EFAULT`, the kernel's answer for an empty stack) and store it
/// in the STACK_TRACE map; returns the stack id or -errno.
pub unsafe extern "C" fn get_stackid(ctx: u64, m: u64, flags: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    use super::stack::{walk_user_stack, MAX_STACK_DEPTH};
    const F_USER_STACK: u64 = 1 << 8;
    let mut ips = [0u64; MAX_STACK_DEPTH];
    let n = if flags & F_USER_STACK != 0 && ctx != 0 {
        // SAFETY: ctx is the program's pt_regs.
        unsafe { walk_user_stack(ctx as *const u8, (flags & 0xff) as usize, &mut ips) }
    } else {
        0
    };
    // SAFETY: `m` is a map handle baked into the verified program.
    unsafe { map(m).get_stackid(&ips[..n], flags) as u64 }
}

/// Leave a ring buffer consumer's wakeup to the end of the run (the
/// kernel's irq_work); without a run environment, wake it now.
///
/// # Safety
/// `env` is the helper's env argument.
unsafe fn defer_wake(env: *mut c_void, wake: Option<shm_maps::WakeWord>) {
    let Some(wake) = wake else { return };
    // SAFETY: `env` is null or the live RunEnv of this run.
    match unsafe { (env as *mut RunEnv).as_mut() } {
        Some(e) => e.defer_ringbuf_wake(wake),
        None => wake.wake(),
    }
}

/// `bpf_ringbuf_output(map, data, size, flags)`.
pub unsafe extern "C" fn ringbuf_output(m: u64, data: u64, size: u64, flags: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `data` readable for `size` bytes.
    let bytes = unsafe { super::guest_bytes(data, size) };
    // SAFETY: `m` is a map handle baked into the verified program.
    let (r, wake) = unsafe { map(m).ringbuf_output_deferred(bytes, flags) };
    // SAFETY: `env` is the RunEnv (or null) the caller passed to run.
    unsafe { defer_wake(env, wake) };
    r as u64
}

/// `bpf_ringbuf_reserve(map, size, flags)`: record pointer or 0.
pub unsafe extern "C" fn ringbuf_reserve(m: u64, size: u64, flags: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: `m` is a map handle baked into the verified program.
    unsafe { map(m).ringbuf_reserve(size, flags) as u64 }
}

/// `bpf_ringbuf_submit(data, flags)`.
pub unsafe extern "C" fn ringbuf_submit(data: u64, flags: u64, _: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `data` an unreleased ringbuf_reserve result.
    let wake = unsafe { shm_maps::ringbuf_submit(data as *mut u8, flags) };
    // SAFETY: `env` is the RunEnv (or null) the caller passed to run.
    unsafe { defer_wake(env, wake) };
    0
}

/// `bpf_ringbuf_discard(data, flags)`.
pub unsafe extern "C" fn ringbuf_discard(data: u64, flags: u64, _: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: as for `ringbuf_submit`.
    let wake = unsafe { shm_maps::ringbuf_discard(data as *mut u8, flags) };
    // SAFETY: as above.
    unsafe { defer_wake(env, wake) };
    0
}

/// `bpf_ringbuf_query(map, flags)`.
pub unsafe extern "C" fn ringbuf_query(m: u64, flags: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: `m` is a map handle baked into the verified program.
    unsafe { map(m).ringbuf_query(flags) }
}
