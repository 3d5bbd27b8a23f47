//! CPU numbering for per-CPU maps and `bpf_get_smp_processor_id`.
//!
//! - [`current`] is the hot-path CPU index: read from the thread's rseq area
//!   (glibc ≥ 2.36 registers rseq for every thread and exports
//!   `__rseq_offset`/`__rseq_size`), i.e. one load relative to the thread
//!   pointer, no syscall. When rseq is unavailable (older glibc,
//!   `GLIBC_TUNABLES=glibc.pthread.rseq=0`, seccomp) it falls back to
//!   `sched_getcpu()`, which glibc answers from the vDSO.
//! - [`nr_possible`] is the number of *possible* CPUs from
//!   `/sys/devices/system/cpu/possible`, the count the kernel uses to size
//!   per-CPU values returned to userspace.
//!
//! The index from [`current`] is only a hint (a thread can migrate right
//! after reading it). What the kernel gets from disabling preemption — one
//! run at a time per per-CPU value slot — userbpf gets from **CPU slots**
//! (`cpu_slot`, [`crate::Registry::enter_run`]): a run claims one
//! exclusively and passes its index as the `cpu` argument of the program
//! view's `*_on_cpu` operations. [`CURRENT`] in that argument means "no
//! claimed slot: use [`current`]".

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::OnceLock;

/// `cpu` argument of the program view meaning "the CPU the calling thread
/// runs on now" (a run without a claimed CPU slot).
pub const CURRENT: u32 = u32::MAX;

/// Value slot index for `cpu` in a per-CPU map of `ncpus` slots
/// ([`CURRENT`] resolved through [`current`]).
#[inline(always)]
pub(crate) fn slot_index(cpu: u32, ncpus: u32) -> u32 {
    let cpu = if cpu == CURRENT { current() } else { cpu };
    if cpu < ncpus {
        cpu
    } else {
        cpu % ncpus
    }
}

/// `__rseq_offset` when glibc registered rseq, `RSEQ_UNKNOWN` until probed,
/// `RSEQ_UNAVAILABLE` when absent.
static RSEQ_OFFSET: AtomicIsize = AtomicIsize::new(RSEQ_UNKNOWN);
const RSEQ_UNKNOWN: isize = isize::MIN;
const RSEQ_UNAVAILABLE: isize = isize::MIN + 1;
/// Offset of `cpu_id` inside `struct rseq` (after `cpu_id_start`).
const RSEQ_CPU_ID_OFFSET: isize = 4;

fn probe_rseq() -> isize {
    // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names only looks up
    // symbols; the results are checked for null before being read.
    let (off_sym, size_sym) = unsafe {
        (
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()),
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()),
        )
    };
    if off_sym.is_null() || size_sym.is_null() {
        return RSEQ_UNAVAILABLE;
    }
    // SAFETY: glibc defines `__rseq_offset` as `const ptrdiff_t` and
    // `__rseq_size` as `const unsigned int`; both symbols were found above.
    let (offset, size) = unsafe { (*(off_sym as *const isize), *(size_sym as *const u32)) };
    if size == 0 {
        return RSEQ_UNAVAILABLE;
    }
    offset
}

#[inline(always)]
fn thread_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: on x86-64 Linux, %fs:0 holds the thread control block's
        // self pointer (the TLS ABI guarantees it); reading it has no effects.
        unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: usize;
        // SAFETY: tpidr_el0 holds the thread pointer on aarch64 Linux.
        unsafe { std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags)) };
        tp
    }
}

#[cold]
fn current_slow() -> u32 {
    let mut off = RSEQ_OFFSET.load(Ordering::Relaxed);
    if off == RSEQ_UNKNOWN {
        off = probe_rseq();
        RSEQ_OFFSET.store(off, Ordering::Relaxed);
        if off != RSEQ_UNAVAILABLE {
            return current();
        }
    }
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        0
    } else {
        cpu as u32
    }
}

/// Index of the CPU the calling thread runs on (a hint: it may migrate).
#[inline(always)]
pub fn current() -> u32 {
    let off = RSEQ_OFFSET.load(Ordering::Relaxed);
    if off > RSEQ_UNAVAILABLE {
        // SAFETY: glibc registered this thread's `struct rseq` at
        // thread_pointer + __rseq_offset for the thread's whole lifetime;
        // the kernel updates `cpu_id` (a u32 at offset 4) on every migration.
        let cpu = unsafe {
            ((thread_pointer() as isize + off + RSEQ_CPU_ID_OFFSET) as *const u32).read_volatile()
        };
        // (u32)-1 / -2: this thread's rseq is not registered.
        if (cpu as i32) >= 0 {
            return cpu;
        }
    }
    current_slow()
}

/// Parses a kernel CPU list such as `0-3,8-11` and returns highest index + 1.
pub fn parse_cpu_list(list: &str) -> Option<u32> {
    let mut max: Option<u32> = None;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let hi = match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: u32 = lo.trim().parse().ok()?;
                let hi: u32 = hi.trim().parse().ok()?;
                if hi < lo {
                    return None;
                }
                hi
            }
            None => part.trim().parse().ok()?,
        };
        max = Some(max.map_or(hi, |m| m.max(hi)));
    }
    max.map(|m| m + 1)
}

/// Number of possible CPUs (what per-CPU map values are sized by).
pub fn nr_possible() -> u32 {
    static N: OnceLock<u32> = OnceLock::new();
    *N.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/possible")
            .ok()
            .and_then(|s| parse_cpu_list(&s))
            .unwrap_or_else(|| {
                // SAFETY: sysconf has no preconditions.
                let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
                n.max(1) as u32
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("3-1"), None);
    }

    #[test]
    fn current_cpu_matches_sched_getcpu_range() {
        let n = nr_possible();
        for _ in 0..1000 {
            assert!(current() < n);
        }
        // SAFETY: no preconditions.
        let k = unsafe { libc::sched_getcpu() };
        assert!(k >= 0 && (k as u32) < n);
    }
}
