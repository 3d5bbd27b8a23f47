//! uretprobes under recursion, `longjmp` out of probed frames, and C++
//! exceptions unwinding through probed frames (real code compiled with gcc
//! and g++ and loaded with dlopen).

mod common;

use rewriter::{attach_uprobe, attach_uretprobe, detach, PtRegs};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

/// Records return values in order.
struct Returns(Mutex<Vec<u64>>);

unsafe extern "C" fn record_return(regs: *mut PtRegs, data: *mut c_void) {
    let returns = unsafe { &*(data as *const Returns) };
    returns.0.lock().unwrap().push(unsafe { (*regs).ax });
}

unsafe extern "C" fn count(_regs: *mut PtRegs, data: *mut c_void) {
    unsafe { &*(data as *const AtomicU64) }.fetch_add(1, Ordering::SeqCst);
}

fn ptr<T>(t: &T) -> *mut c_void {
    t as *const T as *mut c_void
}

#[test]
fn recursion_and_longjmp_out_of_probed_frames() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(path) = common::build_shared_library("returns.c", "gcc", &["-O0", "-g", "-fcf-protection=full"]) else { return };
    let lib = common::Library::open(&path);
    let fact_address = lib.symbol("rw_fact");
    let jumper_address = lib.symbol("rw_jumper");
    let fact: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(fact_address) };
    let run_jump: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(lib.symbol("rw_run_jump")) };

    const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
    let first_bytes = |address: usize| unsafe { std::slice::from_raw_parts(address as *const u8, 5).to_vec() };
    assert_eq!(first_bytes(fact_address)[..4], ENDBR64, "built with -fcf-protection: starts with endbr64");
    let fact_returns = Returns(Mutex::new(Vec::new()));
    let fact_entries = AtomicU64::new(0);
    let jumper_returns = Returns(Mutex::new(Vec::new()));
    let r1 = unsafe { attach_uretprobe(fact_address, record_return, ptr(&fact_returns)) }.unwrap();
    let e1 = unsafe { attach_uprobe(fact_address, count, ptr(&fact_entries)) }.unwrap();
    let r2 = unsafe { attach_uretprobe(jumper_address, record_return, ptr(&jumper_returns)) }.unwrap();

    // The endbr64 stays in place; the jump goes right after it.
    assert_eq!(rewriter::mechanism(e1).unwrap(), rewriter::Mechanism::Trampoline);
    assert_eq!(first_bytes(fact_address)[..4], ENDBR64);
    assert_eq!(first_bytes(fact_address + 4)[0], 0xe9);
    assert_eq!(fact(5), 120);
    assert_eq!(*fact_returns.0.lock().unwrap(), vec![1, 2, 6, 24, 120]);
    assert_eq!(fact_entries.load(Ordering::SeqCst), 5);

    // Each run abandons 11 hijacked frames: more than the shadow stack
    // holds after a few runs, so stale entries must be dropped.
    for _ in 0..20 {
        assert_eq!(run_jump(10), -7);
        // Returns after the longjmp are still right.
        fact_returns.0.lock().unwrap().clear();
        assert_eq!(fact(4), 24);
        assert_eq!(*fact_returns.0.lock().unwrap(), vec![1, 2, 6, 24]);
    }
    assert!(jumper_returns.0.lock().unwrap().is_empty(), "frames left by longjmp never return");
    // A deep recursion after all that: every level reported.
    fact_returns.0.lock().unwrap().clear();
    assert_eq!(fact(20), 2432902008176640000);
    assert_eq!(fact_returns.0.lock().unwrap().len(), 20);
    for id in [r1, e1, r2] {
        detach(id).unwrap();
    }
    assert_eq!(fact(5), 120);
}

#[test]
fn cpp_exceptions_unwind_through_probed_frames() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(path) = common::build_shared_library("exceptions.cc", "g++", &["-O1"]) else { return };
    let lib = common::Library::open(&path);
    let thrower = lib.symbol("rw_cxx_thrower");
    let middle = lib.symbol("rw_cxx_middle");
    let catcher: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(lib.symbol("rw_cxx_catcher")) };

    let returns = Returns(Mutex::new(Vec::new()));
    let entries = AtomicU64::new(0);
    let ids = [
        unsafe { attach_uretprobe(thrower, record_return, ptr(&returns)) }.unwrap(),
        unsafe { attach_uretprobe(middle, record_return, ptr(&returns)) }.unwrap(),
        unsafe { attach_uprobe(middle, count, ptr(&entries)) }.unwrap(),
    ];
    assert_eq!(catcher(1), 11);
    assert_eq!(*returns.0.lock().unwrap(), vec![10, 11]);
    let lost_before = rewriter::counters().uretprobes_lost_to_unwinding;
    for _ in 0..50 {
        assert_eq!(catcher(5), -1, "the exception must reach the catcher");
    }
    assert_eq!(rewriter::counters().uretprobes_lost_to_unwinding - lost_before, 100);
    // Later returns are still reported correctly.
    returns.0.lock().unwrap().clear();
    assert_eq!(catcher(2), 21);
    assert_eq!(*returns.0.lock().unwrap(), vec![20, 21]);
    assert_eq!(entries.load(Ordering::SeqCst), 52);
    for id in ids {
        detach(id).unwrap();
    }
    assert_eq!(catcher(5), -1);
}
