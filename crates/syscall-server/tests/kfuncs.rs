//! Kernel-function calls as libbpf writes them (bpftrace 0.24+'s `strlen()`
//! and `strstr()`): `call` with `src_reg = BPF_PSEUDO_KFUNC_CALL` and the
//! function's id in the running kernel's BTF, and an `ldimm64` of that id
//! for a weak kfunc's existence check. The ids come from bpftool's dump of
//! `/sys/kernel/btf/vmlinux`, not from the server's own lookup. Kfuncs
//! userbpf does not offer, and kernel-module kfuncs, are refused with
//! EINVAL and a log line that names what is missing.
//!
//! One test function: the server's registry is process-wide.

mod common;

use common::*;

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_TYPE_KPROBE: u32 = 2;

/// The vmlinux BTF id of function `name`, as bpftool prints it.
fn vmlinux_func_id(name: &str) -> u32 {
    let out = std::process::Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
        .output()
        .expect("bpftool (Debian package bpftool; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "bpftool btf dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = format!("] FUNC '{name}' ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(&want))
        .and_then(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in this kernel's BTF (Linux 6.17+ has it)"))
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst) << 8
        | u64::from(src) << 12
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// `PROG_LOAD` of a kprobe-type program; the result and the log.
fn load(insns: &[u64]) -> (Result<i64, i32>, String) {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&BPF_PROG_TYPE_KPROBE.to_ne_bytes());
    a[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    a[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    a[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    a[24..28].copy_from_slice(&1u32.to_ne_bytes());
    a[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    a[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    let r = bpf(BPF_PROG_LOAD, &mut a);
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    (r, String::from_utf8_lossy(&log[..end]).into_owned())
}

#[test]
fn kfunc_calls_resolve_by_the_kernels_btf() {
    let _dir = scratch_registry("kfuncs");
    let strnlen = vmlinux_func_id("bpf_strnlen") as i32;
    let strnstr = vmlinux_func_id("bpf_strnstr") as i32;

    // if (bpf_strnlen) r0 = bpf_strnlen("ab", 8) else r0 = -1;
    // then r0 = bpf_strnstr("ab", "b", 8).
    let program = |kfunc_src: u8, off: i16, id: i32| {
        vec![
            insn(0xb7, 1, 0, 0, 0x6261), // r1 = "ab"
            insn(0x7b, 10, 1, -8, 0),    // *(u64 *)(r10 - 8) = r1
            insn(0xb7, 1, 0, 0, 0x62),   // r1 = "b"
            insn(0x7b, 10, 1, -16, 0),   // *(u64 *)(r10 - 16) = r1
            insn(0x18, 1, 3, 0, id),     // r1 = &bpf_strnlen (BTF id)
            insn(0, 0, 0, 0, 0),
            insn(0x15, 1, 0, 5, 0),            // if r1 == 0 goto +5
            insn(0xbf, 1, 10, 0, 0),           // r1 = r10
            insn(0x07, 1, 0, 0, -8),           // r1 += -8
            insn(0xb7, 2, 0, 0, 8),            // r2 = 8
            insn(0x85, 0, kfunc_src, off, id), // call bpf_strnlen
            insn(0x05, 0, 0, 1, 0),            // goto +1
            insn(0xb7, 0, 0, 0, -1),           // r0 = -1
            insn(0xbf, 1, 10, 0, 0),           // r1 = r10
            insn(0x07, 1, 0, 0, -8),           // r1 += -8
            insn(0xbf, 2, 10, 0, 0),           // r2 = r10
            insn(0x07, 2, 0, 0, -16),          // r2 += -16
            insn(0xb7, 3, 0, 0, 8),            // r3 = 8
            insn(0x85, 0, 2, 0, strnstr),      // call bpf_strnstr
            insn(0x95, 0, 0, 0, 0),            // exit
        ]
    };

    let (r, log) = load(&program(2, 0, strnlen));
    assert!(
        r.is_ok(),
        "kfunc calls by vmlinux BTF id load: {r:?}\n{log}"
    );

    // A kernel function userbpf does not offer (here bpf_strcmp): EINVAL,
    // the log names the id and what is offered.
    let strcmp = vmlinux_func_id("bpf_strcmp") as i32;
    let (r, log) = load(&program(2, 0, strcmp));
    assert_eq!(r, Err(libc::EINVAL));
    assert!(
        log.contains(&format!("calling kernel function with BTF id {strcmp} is not supported by userbpf; it offers bpf_strnlen, bpf_strnstr")),
        "{log}"
    );

    // A kernel module's kfunc (off: an fd_array index of its BTF).
    let (r, log) = load(&program(2, 1, strnlen));
    assert_eq!(r, Err(libc::EINVAL));
    assert!(
        log.contains(
            "calling kernel module functions (BTF from fd_array) is not supported by userbpf"
        ),
        "{log}"
    );

    // The kfunc's BTF id as a plain helper id is no helper.
    let (r, log) = load(&program(0, 0, strnlen));
    assert_eq!(r, Err(libc::EINVAL), "{log}");
}
