//! Minimal `bpf(2)` client for the kernel-oracle checks (root only): create
//! the maps a corpus or the fuzzer names by fd, load a program and report
//! the kernel's verdict. Shared by `tests/corpus_reject.rs` and
//! `examples/kernel_diff.rs` (through `#[path]`).

use verifier::{MapDesc, ProgType};
use vm::insn::{Insn, LDDW};

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_PROG_LOAD: i64 = 5;
const BPF_MAP_FREEZE: i64 = 22;
const BPF_F_RDONLY_PROG: u32 = 1 << 7;

fn bpf(cmd: i64, attr: &mut [u8; 128]) -> Result<i32, i32> {
    // SAFETY: `attr` is a zero-filled `union bpf_attr`-sized buffer the
    // kernel reads (and for PROG_LOAD, the pointers in it are live).
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as i32)
    }
}

fn put32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// One map a program names by (pseudo) fd.
pub struct KernelMap<'a> {
    /// The fd the program's `lddw` carries.
    pub fd: i32,
    pub desc: MapDesc,
    /// Created with `BPF_F_RDONLY_PROG`.
    pub readonly_for_programs: bool,
    /// Element 0 is set to this value and the map frozen.
    pub frozen_value: Option<&'a [u8]>,
}

/// Creates the maps in the kernel; returns (program fd, kernel fd) pairs.
pub fn create_maps(maps: &[KernelMap]) -> Vec<(i32, i32)> {
    maps.iter()
        .map(|m| {
            let mut a = [0u8; 128];
            put32(&mut a, 0, m.desc.map_type);
            put32(&mut a, 4, m.desc.key_size);
            put32(&mut a, 8, m.desc.value_size);
            put32(&mut a, 12, m.desc.max_entries);
            put32(&mut a, 16, if m.readonly_for_programs { BPF_F_RDONLY_PROG } else { 0 });
            let kfd = bpf(BPF_MAP_CREATE, &mut a).unwrap_or_else(|e| panic!("BPF_MAP_CREATE for map {}: errno {e}", m.fd));
            if let Some(value) = m.frozen_value {
                let key = 0u32;
                let mut u = [0u8; 128];
                put32(&mut u, 0, kfd as u32);
                put64(&mut u, 8, &key as *const u32 as u64);
                put64(&mut u, 16, value.as_ptr() as u64);
                bpf(BPF_MAP_UPDATE_ELEM, &mut u).expect("BPF_MAP_UPDATE_ELEM");
                let mut f = [0u8; 128];
                put32(&mut f, 0, kfd as u32);
                bpf(BPF_MAP_FREEZE, &mut f).expect("BPF_MAP_FREEZE");
            }
            (m.fd, kfd)
        })
        .collect()
}

/// Loads into the kernel: `Ok(())` if accepted, else the errno and the log's
/// last line. Map fds in `lddw` (map fd / map value) are translated by `fds`.
pub fn load(insns: &[Insn], prog_type: ProgType, fds: &[(i32, i32)]) -> Result<(), (i32, String)> {
    let mut words: Vec<u64> = Vec::with_capacity(insns.len());
    for (pc, i) in insns.iter().enumerate() {
        let mut i = *i;
        let is_map = i.opc == LDDW && matches!(i.src, 1 | 2) && (pc == 0 || insns[pc - 1].opc != LDDW);
        if is_map {
            if let Some((_, k)) = fds.iter().find(|(c, _)| *c == i.imm) {
                i.imm = *k;
            }
        }
        words.push(i.to_u64());
    }
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 20];
    let mut a = [0u8; 128];
    put32(&mut a, 0, prog_type.to_kernel());
    put32(&mut a, 4, words.len() as u32);
    put64(&mut a, 8, words.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put32(&mut a, 24, 1);
    put32(&mut a, 28, log.len() as u32);
    put64(&mut a, 32, log.as_mut_ptr() as u64);
    match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => {
            // SAFETY: closing the program fd the kernel just returned.
            unsafe { libc::close(fd) };
            Ok(())
        }
        Err(e) => {
            let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).to_string();
            let reason = text.lines().rev().find(|l| !l.starts_with("processed ") && !l.trim().is_empty()).unwrap_or("").to_string();
            Err((e, reason))
        }
    }
}
