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
        },
        Err(e) => Verdict {
            log: e.log,
            result: Err(e.errno),
        },
    }
}
