//! Small stateless or per-thread helpers: clocks, random numbers, probe
//! identity (`get_func_ip`, `get_attach_cookie`), `strncmp`.

use std::cell::Cell;
use std::ffi::c_void;

use crate::env::RunEnv;

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec; glibc answers these clocks from the vDSO.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, the kernel's clock for it.
pub unsafe extern "C" fn ktime_get_ns(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME (includes suspend).
pub unsafe extern "C" fn ktime_get_boot_ns(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// `bpf_send_signal(sig)` / `bpf_send_signal_thread(sig)` (bpftrace's
/// `signal()`): the signal is raised at the end of the run, to the process
/// or to the probed thread, as the kernel delivers it on the return to user
/// mode. -EINVAL for an invalid signal, -EBUSY when one is already pending
/// in this run (the kernel's answer when its one deferred slot is taken).
fn send_signal(sig: u64, thread: bool, env: *mut c_void) -> u64 {
    const EINVAL: u64 = -(libc::EINVAL as i64) as u64;
    const EBUSY: u64 = -(libc::EBUSY as i64) as u64;
    const EPERM: u64 = -(libc::EPERM as i64) as u64;
    if sig > 64 {
        return EINVAL;
    }
    // SAFETY: `env` is null or the live RunEnv of this run.
    let Some(env) = (unsafe { (env as *mut RunEnv).as_mut() }) else { return EPERM };
    if env.pending_signal != 0 {
        return EBUSY;
    }
    if sig == 0 {
        // valid_signal(0): only the permission check, which the process
        // itself always passes; nothing is raised.
        return 0;
    }
    env.pending_signal = sig as u32;
    env.signal_thread = thread;
    0
}

/// `bpf_send_signal(sig)`: to the whole process.
pub unsafe extern "C" fn send_signal_process(sig: u64, _: u64, _: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    send_signal(sig, false, env)
}

/// `bpf_send_signal_thread(sig)`: to the probed thread.
pub unsafe extern "C" fn send_signal_thread(sig: u64, _: u64, _: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    send_signal(sig, true, env)
}

/// `bpf_ktime_get_tai_ns()`: CLOCK_TAI (bpftrace's `nsecs(tai)`).
pub unsafe extern "C" fn ktime_get_tai_ns(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    clock_ns(libc::CLOCK_TAI)
}

thread_local! {
    /// xorshift64* state; 0 means "not seeded yet".
    static PRANDOM_STATE: Cell<u64> = const { Cell::new(0) };
}

/// `bpf_get_prandom_u32()`: a per-thread xorshift64* generator, seeded
/// without a system call from the time stamp counter and the stack address.
pub unsafe extern "C" fn get_prandom_u32(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    PRANDOM_STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            // SAFETY: rdtsc has no preconditions on x86-64.
            let tsc = unsafe { core::arch::x86_64::_rdtsc() };
            let local = 0u8;
            x = splitmix64(tsc ^ (&local as *const u8 as u64).rotate_left(32)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) & 0xffff_ffff
    })
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `bpf_get_func_ip(ctx)`: the probed address, from the run environment.
pub unsafe extern "C" fn get_func_ip(_: u64, _: u64, _: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: `env` is the RunEnv (or null) the caller passed to run.
    RunEnv::from_helper_arg(env).map_or(0, |e| e.func_ip)
}

/// `bpf_get_attach_cookie(ctx)`: the attachment's cookie (0 if none).
pub unsafe extern "C" fn get_attach_cookie(_: u64, _: u64, _: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: as above.
    RunEnv::from_helper_arg(env).map_or(0, |e| e.cookie)
}

/// `bpf_strncmp(s1, s1_sz, s2)`: `strncmp(s1, s2, s1_sz)` where `s2` is a
/// NUL-terminated read-only string; returns <0, 0 or >0.
pub unsafe extern "C" fn strncmp(s1: u64, s1_size: u64, s2: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    let (a, b) = (s1 as *const u8, s2 as *const u8);
    for i in 0..s1_size as usize {
        // SAFETY: the verifier proved s1 readable for s1_size bytes and s2
        // a NUL-terminated constant string; we stop at its NUL.
        let (x, y) = (*a.add(i), *b.add(i));
        if x != y {
            // lib/string.c's strncmp, the one x86-64 uses: -1 or 1.
            return if x < y { -1i64 as u64 } else { 1 };
        }
        if x == 0 {
            return 0;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(f: crate::HelperFn, a: [u64; 5], env: *mut c_void) -> u64 {
        // SAFETY: test arguments are valid for each helper called.
        unsafe { f(a[0], a[1], a[2], a[3], a[4], env) }
    }

    #[test]
    fn clocks_advance_and_boot_is_not_behind_monotonic() {
        let a = call(ktime_get_ns, [0; 5], std::ptr::null_mut());
        let b = call(ktime_get_ns, [0; 5], std::ptr::null_mut());
        assert!(b >= a && a > 0);
        assert!(call(ktime_get_boot_ns, [0; 5], std::ptr::null_mut()) >= a);
    }

    #[test]
    fn prandom_is_32_bit_and_varies() {
        let values: Vec<u64> = (0..64).map(|_| call(get_prandom_u32, [0; 5], std::ptr::null_mut())).collect();
        assert!(values.iter().all(|&v| v <= u32::MAX as u64));
        let mut distinct = values.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 60, "{values:?}");
    }

    #[test]
    fn env_helpers_read_the_run_environment() {
        let mut env = RunEnv { cookie: 42, func_ip: 0x1234, ..RunEnv::detached(7) };
        let p = &mut env as *mut RunEnv as *mut c_void;
        assert_eq!(call(get_attach_cookie, [0; 5], p), 42);
        assert_eq!(call(get_func_ip, [0; 5], p), 0x1234);
        assert_eq!(call(get_attach_cookie, [0; 5], std::ptr::null_mut()), 0);
    }

    #[test]
    fn strncmp_follows_c() {
        let s = |x: &[u8]| x.as_ptr() as u64;
        assert_eq!(call(strncmp, [s(b"abc\0"), 4, s(b"abc\0"), 0, 0], std::ptr::null_mut()), 0);
        // -1 and 1, as the kernel's lib/string.c, not the byte difference.
        assert_eq!(call(strncmp, [s(b"abz\0"), 4, s(b"abc\0"), 0, 0], std::ptr::null_mut()) as i64, 1);
        assert_eq!(call(strncmp, [s(b"ab\0\0"), 4, s(b"abc\0"), 0, 0], std::ptr::null_mut()) as i64, -1);
        assert_eq!(call(strncmp, [s(b"abX"), 2, s(b"abc\0"), 0, 0], std::ptr::null_mut()), 0);
    }
}
