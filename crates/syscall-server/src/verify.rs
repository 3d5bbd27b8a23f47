//! The server's side of verification: every `BPF_PROG_LOAD` goes through
//! the `verifier` crate before the program is stored in the registry; a
//! rejection returns the verifier's errno and puts its kernel-shaped log in
//! the loader's `log_buf`.
//!
//! The loader is treated as privileged (`bpf_capable`): bpftrace emits
//! bounded loops, which the kernel only accepts from privileged loaders.
//! Privilege here grants nothing beyond the verifier's rules: programs run in
//! processes of the same user, and every memory access is still proven safe.

use vm::insn::Insn;

use crate::abi;
use crate::backend::MapSpec;

/// A map a program references, by the fd the loader used.
pub struct MapRef {
    pub fd: u32,
    pub id: u32,
    pub spec: MapSpec,
    /// Element 0 of a frozen `BPF_F_RDONLY_PROG` array (libbpf's `.rodata`).
    pub constant_value: Option<Vec<u8>>,
}

/// The verifier's view of the maps a program references, by the loader's fd.
struct LoaderMaps<'a> {
    maps: &'a [MapRef],
}

impl LoaderMaps<'_> {
    fn find(&self, p: verifier::PseudoLoad) -> Option<&MapRef> {
        if p.src == abi::BPF_PSEUDO_MAP_FD || p.src == abi::BPF_PSEUDO_MAP_VALUE {
            self.maps.iter().find(|m| m.fd == p.imm as u32)
        } else {
            None
        }
    }
}

impl verifier::Maps for LoaderMaps<'_> {
    fn describe(&self, p: verifier::PseudoLoad) -> Option<verifier::MapDesc> {
        self.find(p).map(|m| verifier::MapDesc {
            map_type: m.spec.map_type,
            key_size: m.spec.key_size,
            value_size: m.spec.value_size,
            max_entries: m.spec.max_entries,
        })
    }

    fn frozen_readonly_value(&self, p: verifier::PseudoLoad) -> Option<Vec<u8>> {
        self.find(p).and_then(|m| m.constant_value.clone())
    }

    fn readonly_for_programs(&self, p: verifier::PseudoLoad) -> bool {
        self.find(p)
            .is_some_and(|m| m.spec.map_flags & abi::BPF_F_RDONLY_PROG != 0)
    }
}

/// The verifier's answer, ready for the loader.
pub struct Verdict {
    /// Text for `log_buf` (empty unless the loader asked for a log).
    pub log: String,
    pub result: Result<(), i32>,
    /// Safety verification was turned off (`verifier::DISABLE_ENV`): nothing
    /// beyond the structure was proven.
    pub skipped: bool,
}

/// Program types userbpf can run (and so accepts at load).
pub fn prog_type_supported(t: u32) -> bool {
    verifier::ProgType::from_kernel(t).is_some()
}

/// Verify `insns` (map `lddw`s still holding the loader's fds).
pub fn verify(prog_type: u32, insns: &[u64], maps: &[MapRef], log_level: u32) -> Verdict {
    let Some(ty) = verifier::ProgType::from_kernel(prog_type) else {
        return Verdict {
            log: format!("unknown or unsupported program type {prog_type}\n"),
            result: Err(libc::EINVAL),
            skipped: false,
        };
    };
    let decoded: Vec<Insn> = insns.iter().map(|w| Insn::from_u64(*w)).collect();
    let opts = verifier::VerifyOptions {
        log_level,
        unprivileged: false,
        ..Default::default()
    };
    match verifier::verify_with_maps(&decoded, ty, &LoaderMaps { maps }, &opts) {
        Ok(v) => Verdict {
            log: v.log,
            result: Ok(()),
            skipped: v.skipped,
        },
        Err(e) => Verdict {
            log: e.log,
            result: Err(e.errno),
            skipped: false,
        },
    }
}

/// After a successful verification: replace every call to a helper userbpf
/// does not provide by `r0 = 0`, returning how many were replaced.
///
/// The verifier refuses any *reachable* call to such a helper, so these
/// calls are proven dead, typically behind a branch on frozen `.rodata`
/// (funclatency's `if (filter_cg && !bpf_current_task_under_cgroup(…))`).
/// The kernel rewrites dead code too (as `ja -1`); `r0 = 0` is used here so
/// that even a wrong proof could not hang the traced app. Without this the
/// runtime's JIT, which compiles every instruction, refuses the program
/// and it runs in the interpreter. Must not be called when verification was
/// skipped ([`Verdict::skipped`]).
pub fn sanitize_dead_helper_calls(insns: &mut [u64]) -> usize {
    const CALL: u8 = 0x85;
    const MOV64_IMM: u64 = 0xb7;
    let mut replaced = 0;
    let mut pc = 0;
    while pc < insns.len() {
        let word = insns[pc];
        let (opcode, src, imm) = (word as u8, (word >> 12) & 0xf, (word >> 32) as i32);
        if opcode == 0x18 {
            pc += 2; // lddw: the next word is its upper half
            continue;
        }
        if opcode == CALL
            && src == 0
            && u32::try_from(imm).ok().and_then(verifier::helper).is_none()
        {
            insns[pc] = MOV64_IMM; // dst r0, src 0, off 0, imm 0
            replaced += 1;
        }
        pc += 1;
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `opcode | dst | src | off | imm`, one instruction word.
    fn insn(opcode: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        opcode as u64
            | ((dst | (src << 4)) as u64) << 8
            | (off as u16 as u64) << 16
            | (imm as u32 as u64) << 32
    }

    /// `if (*rodata_byte) bpf_current_task_under_cgroup(…)`: helper 37 is not
    /// a userbpf helper, so the program loads only when the branch is known
    /// dead, i.e. when the verifier sees the frozen `.rodata` contents.
    fn filter_program(map_fd: i32) -> Vec<u64> {
        vec![
            insn(0x18, 1, abi::BPF_PSEUDO_MAP_VALUE, 0, map_fd), // r1 = &value[0]
            insn(0, 0, 0, 0, 0),
            insn(0x71, 2, 1, 0, 0),  // r2 = *(u8 *)(r1 + 0)
            insn(0x15, 2, 0, 1, 0),  // if r2 == 0 goto +1
            insn(0x85, 0, 0, 0, 37), // call 37
            insn(0xb7, 0, 0, 0, 0),  // r0 = 0
            insn(0x95, 0, 0, 0, 0),  // exit
        ]
    }

    fn rodata(constant_value: Option<Vec<u8>>) -> MapRef {
        MapRef {
            fd: 7,
            id: 1,
            spec: MapSpec {
                map_type: abi::BPF_MAP_TYPE_ARRAY,
                key_size: 4,
                value_size: 8,
                max_entries: 1,
                map_flags: abi::BPF_F_RDONLY_PROG | shm_maps::map_flags::BPF_F_MMAPABLE,
                map_extra: 0,
                name: "x.rodata".into(),
            },
            constant_value,
        }
    }

    const KPROBE: u32 = 2;

    #[test]
    fn frozen_rodata_decides_branches() {
        let prog = filter_program(7);
        let off = verify(KPROBE, &prog, &[rodata(Some(vec![0; 8]))], 1);
        assert_eq!(off.result, Ok(()), "{}", off.log);
        let on = verify(KPROBE, &prog, &[rodata(Some(vec![1; 8]))], 1);
        assert_eq!(on.result, Err(libc::EINVAL), "{}", on.log);
        assert!(on.log.contains("helper#37"), "{}", on.log);
    }

    #[test]
    fn dead_calls_to_missing_helpers_become_r0_zero() {
        let mut prog = filter_program(7);
        let known = insn(0x85, 0, 0, 0, 14); // bpf_get_current_pid_tgid
        prog.insert(5, known);
        assert_eq!(sanitize_dead_helper_calls(&mut prog), 1);
        assert_eq!(prog[4], insn(0xb7, 0, 0, 0, 0));
        assert_eq!(prog[5], known, "calls to provided helpers stay");
        assert_eq!(
            prog[0],
            insn(0x18, 1, abi::BPF_PSEUDO_MAP_VALUE, 0, 7),
            "lddw untouched"
        );
    }

    #[test]
    fn unfrozen_rodata_is_not_a_constant() {
        let v = verify(KPROBE, &filter_program(7), &[rodata(None)], 1);
        assert!(v.result.is_err(), "{}", v.log);
    }

    #[test]
    fn programs_cannot_write_readonly_maps() {
        let prog = vec![
            insn(0x18, 1, abi::BPF_PSEUDO_MAP_VALUE, 0, 7),
            insn(0, 0, 0, 0, 0),
            insn(0x72, 1, 0, 0, 1), // *(u8 *)(r1 + 0) = 1
            insn(0xb7, 0, 0, 0, 0),
            insn(0x95, 0, 0, 0, 0),
        ];
        let v = verify(KPROBE, &prog, &[rodata(None)], 1);
        assert_eq!(v.result, Err(libc::EACCES), "{}", v.log);
    }
}
