//! The server's side of verification: every `BPF_PROG_LOAD` goes through
//! the `verifier` crate before the program is stored in the registry; a
//! rejection returns the verifier's errno and puts its kernel-shaped log in
//! the loader's `log_buf`.
//!
//! The loader is treated as privileged (`bpf_capable`): bpftrace emits
//! bounded loops, which the kernel only accepts from privileged loaders.
//! Privilege here grants nothing beyond the verifier's rules: programs run in
//! processes of the same user, and every memory access is still proven safe.

use std::collections::BTreeMap;

use vm::insn::Insn;

use crate::abi;
use crate::backend::MapSpec;

/// A map a program references, by the fd the loader used.
pub struct MapRef {
    pub fd: u32,
    pub id: u32,
    pub spec: MapSpec,
}

/// The verifier's answer, ready for the loader.
pub struct Verdict {
    /// Text for `log_buf` (empty unless the loader asked for a log).
    pub log: String,
    pub result: Result<(), i32>,
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
        };
    };
    let by_fd: BTreeMap<u32, verifier::MapDesc> = maps
        .iter()
        .map(|m| {
            (
                m.fd,
                verifier::MapDesc {
                    map_type: m.spec.map_type,
                    key_size: m.spec.key_size,
                    value_size: m.spec.value_size,
                    max_entries: m.spec.max_entries,
                },
            )
        })
        .collect();
    let resolve = |p: verifier::PseudoLoad| -> Option<verifier::MapDesc> {
        if p.src == abi::BPF_PSEUDO_MAP_FD || p.src == abi::BPF_PSEUDO_MAP_VALUE {
            by_fd.get(&(p.imm as u32)).copied()
        } else {
            None
        }
    };
    let decoded: Vec<Insn> = insns.iter().map(|w| Insn::from_u64(*w)).collect();
    let opts = verifier::VerifyOptions {
        log_level,
        unprivileged: false,
        ..Default::default()
    };
    match verifier::verify(&decoded, ty, &resolve, &opts) {
        Ok(v) => Verdict {
            log: v.log,
            result: Ok(()),
        },
        Err(e) => Verdict {
            log: e.log,
            result: Err(e.errno),
        },
    }
}
