//! The server's side of verification: every `BPF_PROG_LOAD` goes through
//! [`verify`] before the program is stored in the registry.
//!
//! INTEGRATION POINT (temporary): `verifier::verify` has not landed; until
//! it does every program is REJECTED (EINVAL) rather than run unverified.

use crate::backend::MapSpec;

pub struct MapRef {
    pub id: u32,
    pub spec: MapSpec,
}

pub struct Verdict {
    pub log: String,
    pub result: Result<(), i32>,
}

pub fn prog_type_supported(t: u32) -> bool {
    matches!(t, 1 | 2 | 7 | 17)
}

pub fn verify(_prog_type: u32, _insns: &[u64], _maps: &[MapRef], _log_level: u32) -> Verdict {
    crate::report::unsupported("loading programs", "verifier integration is pending");
    Verdict { log: "userbpf: verifier not integrated yet\n".into(), result: Err(libc::EINVAL) }
}
