//! Reference programs, in the assembler's text, in the exact shapes loaders
//! generate. One copy shared by the tests, benchmarks and examples of every
//! crate (agent, runtime, verifier), so the program a benchmark measures is
//! the program the tests prove correct. Not part of the embedding API.

/// bpftrace's `@c = count()` with the constant key 0, as bpftrace 0.17
/// compiles it: look the key up; if found, increment the value in place
/// (non-atomically, per-CPU); otherwise insert 1. `map` is the value of the
/// `lddw` map pseudo source (a map fd for a loader, a registry map id for a
/// stored program).
pub fn bpftrace_count(map: u32) -> String {
    format!(
        "
        mov %r1, 0
        stxdw [%r10-8], %r1
        {}",
        count_key_at_fp_minus_8(map)
    )
}

/// bpftrace's `count()` steps for the 8-byte key already stored at
/// `[r10-8]`, through the final `exit`: for programs that compute their key
/// first (e.g. from `bpf_get_attach_cookie`).
pub fn count_key_at_fp_minus_8(map: u32) -> String {
    format!(
        "
        lddw %r1, map_fd({map})
        mov %r2, %r10
        add %r2, -8
        call bpf_map_lookup_elem
        jeq %r0, 0, init
        ldxdw %r1, [%r0]
        add %r1, 1
        stxdw [%r0], %r1
        ja out
        init:
        mov %r1, 1
        stxdw [%r10-16], %r1
        lddw %r1, map_fd({map})
        mov %r2, %r10
        add %r2, -8
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        call bpf_map_update_elem
        out:
        mov %r0, 0
        exit
        "
    )
}

/// bpftrace's `@s = sum(1)` on key 0 as a read-modify-update: look the key
/// up, add 1 to the value found (or to 0), store the sum back with
/// `bpf_map_update_elem`. The racy shape a per-CPU map must make exact.
pub fn bpftrace_sum_one(map: u32) -> String {
    format!("{}\n        mov %r0, 0\n        exit\n", bpftrace_sum_one_steps(map))
}

/// The instructions of [`bpftrace_sum_one`] without the final `exit`, for
/// programs that go on to do more (r0..r5 are clobbered).
pub fn bpftrace_sum_one_steps(map: u32) -> String {
    format!(
        "
        mov %r1, 0
        stxdw [%r10-8], %r1
        lddw %r1, map_fd({map})
        mov %r2, %r10
        add %r2, -8
        call bpf_map_lookup_elem
        mov %r1, 0
        jeq %r0, 0, +1
        ldxdw %r1, [%r0]
        add %r1, 1
        stxdw [%r10-16], %r1
        lddw %r1, map_fd({map})
        mov %r2, %r10
        add %r2, -8
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        call bpf_map_update_elem"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn count_assembles_with_two_map_loads() {
        let insns = crate::asm::assemble(&super::bpftrace_count(7)).unwrap();
        let map_loads = insns.iter().filter(|i| i.opc == crate::insn::LDDW && i.src == crate::insn::BPF_PSEUDO_MAP_FD && i.imm == 7);
        assert_eq!(map_loads.count(), 2);
    }

    #[test]
    fn sum_one_assembles_and_ends_in_exit() {
        let insns = crate::asm::assemble(&super::bpftrace_sum_one(3)).unwrap();
        assert_eq!(insns.last().map(|i| i.opc), Some(crate::insn::EXIT));
        assert_eq!(insns.len(), 22);
    }
}
