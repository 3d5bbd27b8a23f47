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

#[cfg(test)]
mod tests {
    #[test]
    fn count_assembles_with_two_map_loads() {
        let insns = crate::asm::assemble(&super::bpftrace_count(7)).unwrap();
        let map_loads = insns.iter().filter(|i| i.opc == crate::insn::LDDW && i.src == crate::insn::BPF_PSEUDO_MAP_FD && i.imm == 7);
        assert_eq!(map_loads.count(), 2);
    }
}
