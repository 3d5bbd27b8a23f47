//! Helper implementations, registered by kernel id. [`implementation`] is
//! the one place that maps an id to its function; [`registry`] builds the
//! VM's table by iterating `verifier::HELPERS` (the single source of truth
//! for which helpers exist) and fails, naming them, if any has no
//! implementation here — a test keeps the two in step. Helper 12
//! (`bpf_tail_call`) is the VM's own (through a `TailCallResolver`).
//!
//! # Safety (every helper)
//! Helpers are `unsafe extern "C"` functions called by the VM with the
//! registers of a *verified* program: pointer arguments satisfy the
//! prototype in `verifier::HELPERS` (readable/writable for the stated
//! size, map handles produced by `LoadedProgram`), and `env` is null or the
//! `RunEnv` passed to the run. That one contract is stated here rather than
//! on each function.
#![allow(clippy::missing_safety_doc)]

pub mod callbacks;
pub mod format;
pub mod kfuncs;
pub mod map_ops;
pub mod misc;
pub mod probe;
pub mod stack;
pub mod task;

use std::ffi::c_void;

use vm::program::{HelperFn, Helpers};

/// The `len` bytes at `ptr` as a slice; empty (never a null-based slice)
/// when `len` is 0, as programs may pass NULL with a zero size.
///
/// # Safety
/// `ptr` must be readable for `len` bytes when `len > 0`, and stay so for `'a`.
#[inline]
pub(crate) unsafe fn guest_bytes<'a>(ptr: u64, len: u64) -> &'a [u8] {
    if len == 0 || ptr == 0 {
        &[]
    } else {
        // SAFETY: forwarded from this function's contract.
        unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) }
    }
}

/// Mutable counterpart of [`guest_bytes`].
///
/// # Safety
/// `ptr` must be writable for `len` bytes when `len > 0`, unaliased for `'a`.
#[inline]
pub(crate) unsafe fn guest_bytes_mut<'a>(ptr: u64, len: u64) -> &'a mut [u8] {
    if len == 0 || ptr == 0 {
        &mut []
    } else {
        // SAFETY: forwarded from this function's contract.
        unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len as usize) }
    }
}

/// Helper id of `bpf_tail_call`, which the VM implements itself through the
/// embedder's `TailCallResolver` rather than a helper function.
pub const TAIL_CALL: u32 = 12;

/// `bpf_get_current_task()`: there is no `task_struct` in user space; the
/// pointer is 0, so any `probe_read_kernel` through it fails cleanly.
unsafe extern "C" fn get_current_task(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    0
}

/// The implementation of helper `id`, if this runtime has one.
pub fn implementation(id: u32) -> Option<HelperFn> {
    let f: HelperFn = match id {
        1 => map_ops::map_lookup_elem,
        2 => map_ops::map_update_elem,
        3 => map_ops::map_delete_elem,
        4 => probe::probe_read,
        5 => misc::ktime_get_ns,
        6 => format::trace_printk,
        7 => misc::get_prandom_u32,
        8 => task::get_smp_processor_id,
        14 => task::get_current_pid_tgid,
        15 => task::get_current_uid_gid,
        16 => task::get_current_comm,
        25 => map_ops::perf_event_output,
        27 => map_ops::get_stackid,
        35 => get_current_task,
        45 => probe::probe_read_str,
        67 => stack::get_stack,
        80 => task::get_current_cgroup_id,
        87 => map_ops::map_push_elem,
        88 => map_ops::map_pop_elem,
        89 => map_ops::map_peek_elem,
        109 => misc::send_signal_process,
        112 => probe::probe_read_user,
        113 => probe::probe_read_kernel,
        114 => probe::probe_read_user_str,
        115 => probe::probe_read_kernel_str,
        117 => misc::send_signal_thread,
        120 => task::get_ns_current_pid_tgid,
        125 => misc::ktime_get_boot_ns,
        164 => callbacks::for_each_map_elem,
        130 => map_ops::ringbuf_output,
        131 => map_ops::ringbuf_reserve,
        132 => map_ops::ringbuf_submit,
        133 => map_ops::ringbuf_discard,
        134 => map_ops::ringbuf_query,
        165 => format::snprintf,
        173 => misc::get_func_ip,
        174 => misc::get_attach_cookie,
        181 => callbacks::bpf_loop,
        182 => misc::strncmp,
        195 => map_ops::map_lookup_percpu_elem,
        208 => misc::ktime_get_tai_ns,
        verifier::BPF_STRNLEN => kfuncs::strnlen,
        verifier::BPF_STRNSTR => kfuncs::strnstr,
        _ => return None,
    };
    Some(f)
}

/// The program being run, from a helper's `env` argument.
///
/// # Safety
/// `env` is the helper's env argument.
pub(crate) unsafe fn running_program<'a>(env: *mut c_void) -> Option<&'a crate::program::LoadedProgram> {
    // SAFETY: `env` is null or a RunEnv whose `program` is null or the
    // running LoadedProgram (LoadedProgram::run's contract).
    unsafe { crate::env::RunEnv::from_helper_arg(env).and_then(|e| (e.program as *const crate::program::LoadedProgram).as_ref()) }
}

/// Helpers of the verifier's table that this runtime cannot run.
#[derive(Clone, Debug, thiserror::Error)]
#[error("helpers offered by the verifier but not implemented by the runtime: {}", names.join(", "))]
pub struct MissingHelpers {
    pub names: Vec<&'static str>,
}

/// The VM helper table: every helper of `verifier::HELPERS`.
pub fn registry() -> Result<Helpers, MissingHelpers> {
    let mut helpers = Helpers::new();
    let mut missing = Vec::new();
    for proto in verifier::HELPERS {
        if proto.id == TAIL_CALL {
            continue;
        }
        match implementation(proto.id) {
            Some(f) => {
                helpers.register(proto.id, f);
            }
            None => missing.push(proto.name),
        }
    }
    if missing.is_empty() {
        Ok(helpers)
    } else {
        Err(MissingHelpers { names: missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verifier_helper_has_an_implementation() {
        if let Err(e) = registry() {
            panic!("{e}");
        }
    }

    #[test]
    fn no_implementation_the_verifier_does_not_know() {
        for id in 0..256 {
            if implementation(id).is_some() {
                assert!(verifier::helper(id).is_some(), "helper {id} implemented but not in verifier::HELPERS");
            }
        }
    }
}
