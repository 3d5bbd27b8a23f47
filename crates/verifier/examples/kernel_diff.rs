//! Differential check against the running kernel's verifier (root only):
//! generates programs like the fuzzer and reports every program userbpf
//! accepts but the kernel refuses (a candidate unsoundness, or a place where
//! the kernel is merely stricter), with the kernel's reason.
//!
//!     sudo target/release/examples/kernel_diff [PROGRAMS] [SEED]

#[path = "../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::collections::BTreeMap;

use verifier::{verify_with_maps, ProgType, VerifyOptions};
use vm::insn::{Insn, LDDW};

fn bpf(cmd: i64, attr: &mut [u8; 128]) -> Result<i32, i32> {
    // SAFETY: `attr` is a `union bpf_attr`-sized buffer whose pointers are live.
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

fn create_maps() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for fd in 1..=8 {
        let d = fuzz_support::fuzz_map(fd).unwrap();
        let mut a = [0u8; 128];
        put32(&mut a, 0, d.map_type);
        put32(&mut a, 4, d.key_size);
        put32(&mut a, 8, d.value_size);
        put32(&mut a, 12, d.max_entries);
        put32(&mut a, 16, if fd == 6 { 1 << 7 } else { 0 });
        let k = bpf(0, &mut a).unwrap_or_else(|e| panic!("BPF_MAP_CREATE {fd}: errno {e}"));
        if fd == 6 {
            let key = 0u32;
            let value = [3u8, 0, 0, 0, 0, 0, 0, 0];
            let mut u = [0u8; 128];
            put32(&mut u, 0, k as u32);
            put64(&mut u, 8, &key as *const u32 as u64);
            put64(&mut u, 16, value.as_ptr() as u64);
            bpf(2, &mut u).expect("update");
            let mut f = [0u8; 128];
            put32(&mut f, 0, k as u32);
            bpf(22, &mut f).expect("freeze");
        }
        out.push((fd, k));
    }
    out
}

fn kernel_load(insns: &[Insn], fds: &[(i32, i32)]) -> Result<(), String> {
    let mut words = Vec::with_capacity(insns.len());
    let mut pc = 0;
    while pc < insns.len() {
        let mut i = insns[pc];
        if i.opc == LDDW && matches!(i.src, 1 | 2) {
            if let Some((_, k)) = fds.iter().find(|(c, _)| *c == i.imm) {
                i.imm = *k;
            }
        }
        words.push(i.to_u64());
        if insns[pc].opc == LDDW && pc + 1 < insns.len() {
            words.push(insns[pc + 1].to_u64());
            pc += 1;
        }
        pc += 1;
    }
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 16];
    let mut a = [0u8; 128];
    put32(&mut a, 0, ProgType::Kprobe.to_kernel());
    put32(&mut a, 4, words.len() as u32);
    put64(&mut a, 8, words.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put32(&mut a, 24, 1);
    put32(&mut a, 28, log.len() as u32);
    put64(&mut a, 32, log.as_mut_ptr() as u64);
    match bpf(5, &mut a) {
        Ok(fd) => {
            // SAFETY: closing the fd the kernel just returned.
            unsafe { libc::close(fd) };
            Ok(())
        }
        Err(e) => {
            let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).to_string();
            let reason = text.lines().rev().find(|l| !l.starts_with("processed ") && !l.trim().is_empty()).unwrap_or("").to_string();
            Err(format!("errno {e}: {reason}"))
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let programs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(7);
    let fds = create_maps();
    let mut rng = fuzz_support::Rng::new(seed);
    let mut pool: Vec<Vec<Insn>> = Vec::new();
    let (mut ours, mut both) = (0u64, 0u64);
    let mut reasons: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for _ in 0..programs {
        let prog = if pool.is_empty() || rng.chance(50) {
            fuzz_support::generate(&mut rng)
        } else {
            let base = pool[rng.below(pool.len() as u64) as usize].clone();
            fuzz_support::mutate(&mut rng, &base)
        };
        if verify_with_maps(&prog, ProgType::Kprobe, &fuzz_support::FuzzMaps, &VerifyOptions::default()).is_err() {
            continue;
        }
        ours += 1;
        pool.push(prog.clone());
        match kernel_load(&prog, &fds) {
            Ok(()) => both += 1,
            Err(reason) => {
                let key: String = reason.chars().filter(|c| !c.is_ascii_digit()).collect();
                let hex = prog.iter().map(|i| format!("{:016x}", i.to_u64())).collect::<Vec<_>>().join(" ");
                reasons.entry(key).or_insert((0, hex)).0 += 1;
            }
        }
    }
    println!("{ours} accepted by userbpf, {both} of them by the kernel too");
    for (reason, (count, example)) in &reasons {
        println!("{count:6} kernel refused: {reason}\n       e.g. {example}");
    }
}
