//! Helpers that call back into the running program: `bpf_loop` and
//! `bpf_for_each_map_elem`. The callback is a BPF function of the program
//! (its `lddw BPF_PSEUDO_FUNC` was resolved to the function's instruction
//! index); the helper finds the running [`LoadedProgram`] through
//! `RunEnv::program` and runs the function with the interpreter's
//! `run_function` (a fresh stack per call, so it is re-entrant).

use std::ffi::c_void;

use crate::maps::MapHandle;

const EINVAL: u64 = -(libc::EINVAL as i64) as u64;
const E2BIG: u64 = -(libc::E2BIG as i64) as u64;
/// The kernel's `BPF_MAX_LOOPS`.
const MAX_LOOPS: u64 = 1 << 23;
/// Largest key `bpf_for_each_map_elem` iterates (kept on the native stack).
const MAX_ITER_KEY: usize = 512;

use super::running_program;

/// `bpf_loop(nr_loops, callback, ctx, flags)`: calls `callback(i, ctx)` for
/// i in 0..nr_loops until it returns non-zero; returns the number of calls.
pub unsafe extern "C" fn bpf_loop(nr_loops: u64, callback: u64, ctx: u64, flags: u64, _: u64, env: *mut c_void) -> u64 {
    if flags != 0 {
        return EINVAL;
    }
    // The kernel's nr_loops is a u32 (BPF_CALL_4(bpf_loop, u32 nr_loops, …)).
    let nr_loops = u64::from(nr_loops as u32);
    if nr_loops > MAX_LOOPS {
        return E2BIG;
    }
    // SAFETY: forwarded env.
    let Some(program) = (unsafe { running_program(env) }) else { return EINVAL };
    for i in 0..nr_loops {
        // SAFETY: the verifier checked the callback against this signature.
        let ret = unsafe { program.run_callback(callback as usize, [i, ctx, 0, 0, 0], env) };
        match ret {
            Some(0) => continue,
            Some(_) => return i + 1,
            None => return EINVAL,
        }
    }
    nr_loops
}

/// `bpf_for_each_map_elem(map, callback, ctx, flags)`: calls
/// `callback(map, &key, &value, ctx)` per element until it returns 1;
/// returns the number of elements visited.
pub unsafe extern "C" fn for_each_map_elem(m: u64, callback: u64, ctx: u64, flags: u64, _: u64, env: *mut c_void) -> u64 {
    if flags != 0 {
        return EINVAL;
    }
    // SAFETY: `m` is a map handle baked into the verified program.
    let map = unsafe { &*(m as *const MapHandle) };
    // SAFETY: forwarded env.
    let Some(program) = (unsafe { running_program(env) }) else { return EINVAL };
    let key_size = map.key_size() as usize;
    if key_size > MAX_ITER_KEY {
        return E2BIG;
    }
    let mut key = [0u8; MAX_ITER_KEY];
    let mut next = [0u8; MAX_ITER_KEY];
    let mut visited = 0u64;
    let mut first = true;
    loop {
        let previous = if first { None } else { Some(&key[..key_size]) };
        if map.get_next_key(previous, &mut next[..key_size]).is_err() {
            return visited;
        }
        first = false;
        key[..key_size].copy_from_slice(&next[..key_size]);
        // SAFETY: `key` holds key_size bytes.
        let value = unsafe { map.prog_lookup(key.as_ptr()) };
        if value.is_null() {
            continue; // deleted meanwhile
        }
        visited += 1;
        // SAFETY: the verifier checked the callback against this signature;
        // key and value stay valid during the call.
        let ret = unsafe { program.run_callback(callback as usize, [m, key.as_ptr() as u64, value as u64, ctx, 0], env) };
        match ret {
            Some(0) => {}
            Some(_) => return visited,
            None => return EINVAL,
        }
    }
}
