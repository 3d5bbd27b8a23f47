//! The one program of the bpf_conformance negative suite that is well formed
//! (so the VM's loader accepts it) but unsafe: `error.data`, `or %r0, %r10`,
//! reads r0 before writing it. The VM's negative test leaves it to the
//! verifier; this proves the verifier refuses it, as every `BPF_PROG_LOAD`
//! in userbpf goes through the verifier.

use std::path::PathBuf;

use verifier::{verify, ProgType, VerifyOptions, EACCES};

fn negative_dir() -> PathBuf {
    match std::env::var_os("USERBPF_CONFORMANCE_NEGATIVE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/negative"),
    }
}

#[test]
fn error_vector_is_refused_by_the_verifier() {
    let path = negative_dir().join("error.data");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let case = vm::conformance::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let insns = case.program().expect("error.data assembles and is structurally valid");
    for unprivileged in [false, true] {
        let err = verify(&insns, ProgType::Kprobe, &|_| None, &VerifyOptions { unprivileged, ..Default::default() })
            .expect_err("reading an uninitialised r0 must be refused");
        assert_eq!(err.errno, EACCES, "{err:?}");
        assert_eq!(err.insn, Some(0), "{err:?}");
        assert!(err.message.contains("R0 !read_ok"), "message: {}", err.message);
    }
}
