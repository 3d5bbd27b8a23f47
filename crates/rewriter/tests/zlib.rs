//! Every function of a real shared library probed while a workload uses it:
//! zlib (dlopen'ed), an empty counting handler on each of its function
//! symbols. The workload's output must be unchanged and the hit counts
//! exact and reproducible.
//!
//! Kernel oracle (opt-in: `USERBPF_KERNEL_ORACLE=1`, root, bpftrace): the
//! same workload runs once more in a child process (this test binary in
//! workload-only mode) under bpftrace counting zlib's functions with kernel
//! uprobes; every count must equal ours for one run. (Kernel and rewriter
//! probes cannot share an address in one process: the kernel single-steps
//! the instruction it read from the *file*, not our jump.)

mod common;

use rewriter::{attach_uprobe, detach, maps::FileRef, PtRegs};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const LIBZ: &str = "/usr/lib/x86_64-linux-gnu/libz.so.1";

unsafe extern "C" fn count(_regs: *mut PtRegs, data: *mut c_void) {
    unsafe { &*(data as *const AtomicU64) }.fetch_add(1, Ordering::Relaxed);
}

type Compress2 = extern "C" fn(*mut u8, *mut libc::c_ulong, *const u8, libc::c_ulong, libc::c_int) -> libc::c_int;
type Uncompress = extern "C" fn(*mut u8, *mut libc::c_ulong, *const u8, libc::c_ulong) -> libc::c_int;
type Checksum = extern "C" fn(libc::c_ulong, *const u8, libc::c_uint) -> libc::c_ulong;

struct Zlib {
    compress2: Compress2,
    uncompress: Uncompress,
    crc32: Checksum,
    adler32: Checksum,
}

impl Zlib {
    fn load(lib: &common::Library) -> Zlib {
        // SAFETY: these are zlib's documented prototypes.
        unsafe {
            Zlib {
                compress2: std::mem::transmute::<usize, Compress2>(lib.symbol("compress2")),
                uncompress: std::mem::transmute::<usize, Uncompress>(lib.symbol("uncompress")),
                crc32: std::mem::transmute::<usize, Checksum>(lib.symbol("crc32")),
                adler32: std::mem::transmute::<usize, Checksum>(lib.symbol("adler32")),
            }
        }
    }

    /// Compression round trips at every level; returns everything produced.
    fn workload(&self) -> Vec<u8> {
        let mut transcript = Vec::new();
        for level in 0..=9 {
            let input: Vec<u8> = (0..20_000u32).map(|i| ((i * 7 + level as u32) % 251) as u8 ^ (i / 97) as u8).collect();
            let mut compressed = vec![0u8; 40_000];
            let mut compressed_len = compressed.len() as libc::c_ulong;
            let r = (self.compress2)(compressed.as_mut_ptr(), &mut compressed_len, input.as_ptr(), input.len() as _, level);
            assert_eq!(r, 0, "compress2 failed");
            compressed.truncate(compressed_len as usize);
            let mut output = vec![0u8; input.len()];
            let mut output_len = output.len() as libc::c_ulong;
            let r = (self.uncompress)(output.as_mut_ptr(), &mut output_len, compressed.as_ptr(), compressed.len() as _);
            assert_eq!(r, 0, "uncompress failed");
            assert_eq!(output, input, "round trip changed the data");
            let crc = (self.crc32)(0, input.as_ptr(), input.len() as _);
            let adler = (self.adler32)(1, input.as_ptr(), input.len() as _);
            transcript.extend_from_slice(&compressed);
            transcript.extend_from_slice(&crc.to_le_bytes());
            transcript.extend_from_slice(&adler.to_le_bytes());
        }
        transcript
    }
}

#[test]
fn every_zlib_function_probed_while_zlib_works() {
    if !Path::new(LIBZ).exists() {
        eprintln!("SKIPPED: {LIBZ} is not installed");
        return;
    }
    let lib = common::Library::open(Path::new(LIBZ));
    let zlib = Zlib::load(&lib);
    if std::env::var_os(WORKLOAD_ONLY).is_some() {
        zlib.workload(); // child of the kernel oracle
        return;
    }
    let unprobed = zlib.workload();

    // One probe per function address (aliases share one).
    let mut functions: BTreeMap<u64, String> = BTreeMap::new();
    for f in rewriter::elf::list_functions(Path::new(LIBZ)).unwrap() {
        functions.entry(f.file_offset).or_insert(f.name);
    }
    assert!(functions.len() > 50, "only {} functions in zlib?", functions.len());
    let counters: Vec<AtomicU64> = functions.keys().map(|_| AtomicU64::new(0)).collect();
    let mut ids = Vec::new();
    let mut breakpoints = 0;
    for ((offset, name), counter) in functions.iter().zip(&counters) {
        let address = rewriter::maps::file_offset_to_address(FileRef::Path(Path::new(LIBZ)), *offset)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let id = unsafe { attach_uprobe(address, count, counter as *const AtomicU64 as *mut c_void) }
            .unwrap_or_else(|e| panic!("attaching to {name}: {e}"));
        if matches!(rewriter::mechanism(id).unwrap(), rewriter::Mechanism::Breakpoint { .. }) {
            breakpoints += 1;
        }
        ids.push(id);
    }
    eprintln!("{} zlib functions probed, {breakpoints} through the breakpoint fallback", functions.len());

    let snapshot = || -> BTreeMap<&str, u64> {
        functions.values().map(|n| n.as_str()).zip(counters.iter().map(|c| c.swap(0, Ordering::SeqCst))).collect()
    };
    assert_eq!(zlib.workload(), unprobed, "probing changed zlib's output");
    let first = snapshot();
    assert_eq!(zlib.workload(), unprobed);
    let second = snapshot();
    assert_eq!(first, second, "hit counts differ between two identical runs");
    // Functions only the workload calls are counted exactly (adler32 is
    // also called by deflate and inflate for the zlib trailer).
    for direct in ["compress2", "uncompress", "crc32"] {
        assert_eq!(first[direct], 10, "{direct}");
    }
    assert!(first["adler32"] >= 10);
    // compress2 runs deflateInit_/deflate/deflateEnd once per call at least.
    assert!(first["deflateInit_"] >= 10 && first["deflate"] >= 10 && first["deflateEnd"] >= 10, "{first:?}");

    if let Some(kernel) = kernel_oracle_counts() {
        for (name, count) in &first {
            assert_eq!(kernel.get(*name).copied().unwrap_or(0), *count, "{name}: kernel vs rewriter");
        }
        eprintln!("kernel oracle: all {} counts match", first.len());
    }
    for id in ids {
        detach(id).unwrap();
    }
    assert_eq!(zlib.workload(), unprobed);
    assert!(counters.iter().all(|c| c.load(Ordering::SeqCst) == 0), "hits after detach");
}

const WORKLOAD_ONLY: &str = "REWRITER_ZLIB_WORKLOAD_ONLY";

/// Runs the workload once in a child process while bpftrace counts zlib's
/// functions with kernel uprobes; `None` (reason printed) when not enabled.
fn kernel_oracle_counts() -> Option<BTreeMap<String, u64>> {
    if std::env::var("USERBPF_KERNEL_ORACLE").as_deref() != Ok("1") {
        eprintln!("kernel oracle SKIPPED: set USERBPF_KERNEL_ORACLE=1 (needs root and bpftrace)");
        return None;
    }
    let child = format!(
        "{} --exact every_zlib_function_probed_while_zlib_works --test-threads 1",
        std::env::current_exe().unwrap().display()
    );
    // `probe` (not `func`: the child is gone when the map is printed, so its
    // addresses could not be symbolized); `cpid` filters out bpftrace's own
    // use of zlib and other processes.
    let script = format!("uprobe:{LIBZ}:* /pid == cpid/ {{ @[probe] = count(); }}");
    let output = match std::process::Command::new("bpftrace").args(["-e", &script, "-c", &child]).env(WORKLOAD_ONLY, "1").output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kernel oracle SKIPPED: cannot run bpftrace: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bpftrace failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let mut counts = BTreeMap::new();
    for line in stdout.lines() {
        // "@[uprobe:/usr/lib/x86_64-linux-gnu/libz.so.1:compress2]: 10"
        if let Some((probe, n)) = line.strip_prefix("@[").and_then(|l| l.split_once("]: ")) {
            let name = probe.rsplit(':').next().unwrap_or(probe);
            counts.insert(name.to_string(), n.trim().parse().unwrap());
        }
    }
    assert!(!counts.is_empty(), "bpftrace counted nothing: {stdout}");
    Some(counts)
}
