//! Attach/detach on functions of this test binary: symbol and address
//! resolution, uprobe and uretprobe register contents, the breakpoint
//! fallback, several probes per function, and argument-register preservation.

use rewriter::{attach_uprobe, attach_uretprobe, detach, maps::FileRef, Mechanism, PtRegs};
use std::ffi::c_void;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Tests patch shared functions: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Default)]
struct Seen {
    hits: AtomicU64,
    di: AtomicU64,
    si: AtomicU64,
    ax: AtomicU64,
    ip: AtomicU64,
    sp: AtomicU64,
}

unsafe extern "C" fn record(regs: *mut PtRegs, data: *mut c_void) {
    let (regs, seen) = unsafe { (&*regs, &*(data as *const Seen)) };
    seen.hits.fetch_add(1, Ordering::SeqCst);
    seen.di.store(regs.di, Ordering::SeqCst);
    seen.si.store(regs.si, Ordering::SeqCst);
    seen.ax.store(regs.ax, Ordering::SeqCst);
    seen.ip.store(regs.ip, Ordering::SeqCst);
    seen.sp.store(regs.sp, Ordering::SeqCst);
}

fn data(seen: &Seen) -> *mut c_void {
    seen as *const Seen as *mut c_void
}

/// Big enough to get a trampoline: several instructions before any branch.
#[inline(never)]
#[no_mangle]
pub extern "C" fn rewriter_test_mix(a: u64, b: u64) -> u64 {
    let mut x = black_box(a).wrapping_mul(31);
    for i in 0..black_box(b) {
        x = x.rotate_left(3) ^ i;
    }
    black_box(x)
}

/// `lea eax, [rdi+rsi]; ret`: 4 bytes, shorter than the 5-byte jump.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn rewriter_test_tiny(a: u64, b: u64) -> u64 {
    core::arch::naked_asm!("lea eax, [rdi + rsi]", "ret")
}

#[inline(never)]
#[no_mangle]
pub extern "C" fn rewriter_test_float(a: f64, b: f64, c: u64) -> f64 {
    black_box(a * 2.0 + b / 4.0 + c as f64)
}

fn expected_mix(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(31);
    for i in 0..b {
        x = x.rotate_left(3) ^ i;
    }
    x
}

#[test]
fn symbol_file_offset_and_running_address_agree() {
    let exe = std::env::current_exe().unwrap();
    let offset = rewriter::elf::resolve_symbol(&exe, "rewriter_test_mix").unwrap();
    let address = rewriter::maps::file_offset_to_address(FileRef::Path(&exe), offset).unwrap();
    assert_eq!(address, rewriter_test_mix as *const () as usize);
    // Same answer by device and inode.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&exe).unwrap();
    let by_inode = rewriter::maps::file_offset_to_address(FileRef::DevIno { dev: meta.dev(), ino: meta.ino() }, offset).unwrap();
    assert_eq!(by_inode, address);
    let functions = rewriter::elf::list_functions(&exe).unwrap();
    assert!(functions.iter().any(|f| f.name == "rewriter_test_tiny" && f.size > 0));
    assert!(matches!(
        rewriter::elf::resolve_symbol(&exe, "no_such_function_here"),
        Err(rewriter::Error::SymbolNotFound { .. })
    ));
}

#[test]
fn uprobe_sees_arguments_ip_and_entry_sp_then_detaches() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_test_mix as *const () as usize;
    let seen = Seen::default();
    let id = unsafe { attach_uprobe(address, record, data(&seen)) }.unwrap();
    assert_eq!(rewriter::mechanism(id).unwrap(), Mechanism::Trampoline);
    for i in 0..10 {
        assert_eq!(rewriter_test_mix(black_box(i), black_box(7)), expected_mix(i, 7));
    }
    assert_eq!(seen.hits.load(Ordering::SeqCst), 10);
    assert_eq!(seen.di.load(Ordering::SeqCst), 9);
    assert_eq!(seen.si.load(Ordering::SeqCst), 7);
    assert_eq!(seen.ip.load(Ordering::SeqCst) as usize, address);
    // At entry, sp points at the return address: 8 mod 16 under the ABI.
    assert_eq!(seen.sp.load(Ordering::SeqCst) % 16, 8);
    detach(id).unwrap();
    rewriter_test_mix(1, 2);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 10);
    assert!(matches!(detach(id), Err(rewriter::Error::UnknownProbe(_))));
}

#[test]
fn uretprobe_sees_return_value_and_return_address() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_test_mix as *const () as usize;
    let seen = Seen::default();
    let id = unsafe { attach_uretprobe(address, record, data(&seen)) }.unwrap();
    let result = rewriter_test_mix(black_box(5), black_box(3));
    assert_eq!(result, expected_mix(5, 3));
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    assert_eq!(seen.ax.load(Ordering::SeqCst), result);
    let ip = seen.ip.load(Ordering::SeqCst) as usize;
    let this = uretprobe_sees_return_value_and_return_address as *const () as usize;
    assert!(ip > this && ip < this + 4096, "return address {ip:#x} is not in the caller");
    detach(id).unwrap();
    rewriter_test_mix(5, 3);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn short_function_falls_back_to_a_breakpoint() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_test_tiny as *const () as usize;
    let entry = Seen::default();
    let ret = Seen::default();
    let id = unsafe { attach_uprobe(address, record, data(&entry)) }.unwrap();
    let rid = unsafe { attach_uretprobe(address, record, data(&ret)) }.unwrap();
    match rewriter::mechanism(id).unwrap() {
        Mechanism::Breakpoint { reason } => assert!(reason.contains("shorter"), "{reason}"),
        other => panic!("expected the breakpoint fallback, got {other:?}"),
    }
    let f: extern "C" fn(u64, u64) -> u64 = black_box(rewriter_test_tiny);
    assert_eq!(f(40, 2), 42);
    assert_eq!(entry.hits.load(Ordering::SeqCst), 1);
    assert_eq!((entry.di.load(Ordering::SeqCst), entry.si.load(Ordering::SeqCst)), (40, 2));
    assert_eq!(entry.ip.load(Ordering::SeqCst) as usize, address);
    assert_eq!(ret.hits.load(Ordering::SeqCst), 1);
    assert_eq!(ret.ax.load(Ordering::SeqCst), 42);
    detach(rid).unwrap();
    detach(id).unwrap();
    assert_eq!(f(1, 2), 3);
    assert_eq!(entry.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn several_probes_in_any_order_and_float_arguments_survive() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_test_float as *const () as usize;
    let (a, b, c) = (Seen::default(), Seen::default(), Seen::default());
    let ia = unsafe { attach_uprobe(address, record, data(&a)) }.unwrap();
    let ic = unsafe { attach_uretprobe(address, record, data(&c)) }.unwrap();
    let ib = unsafe { attach_uprobe(address, record, data(&b)) }.unwrap();
    let f: extern "C" fn(f64, f64, u64) -> f64 = black_box(rewriter_test_float);
    assert_eq!(f(1.5, 8.0, 3), 1.5 * 2.0 + 2.0 + 3.0);
    detach(ia).unwrap();
    assert_eq!(f(1.0, 4.0, 1), 4.0);
    detach(ic).unwrap();
    assert_eq!(f(1.0, 4.0, 1), 4.0);
    detach(ib).unwrap();
    assert_eq!(f(1.0, 4.0, 1), 4.0);
    assert_eq!(a.hits.load(Ordering::SeqCst), 1);
    assert_eq!(b.hits.load(Ordering::SeqCst), 3);
    assert_eq!(c.hits.load(Ordering::SeqCst), 2);
}

static APP_SIGTRAPS: AtomicU64 = AtomicU64::new(0);

extern "C" fn application_sigtrap_handler(_signal: libc::c_int) {
    APP_SIGTRAPS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn the_applications_own_sigtrap_handler_still_gets_its_signals() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The application installs a handler first; then breakpoint probes are used.
    unsafe { libc::signal(libc::SIGTRAP, application_sigtrap_handler as *const () as libc::sighandler_t) };
    let seen = Seen::default();
    let id = unsafe { attach_uprobe(rewriter_test_tiny as *const () as usize, record, data(&seen)) }.unwrap();
    assert!(matches!(rewriter::mechanism(id).unwrap(), Mechanism::Breakpoint { .. }));
    let f: extern "C" fn(u64, u64) -> u64 = black_box(rewriter_test_tiny);
    assert_eq!(f(1, 1), 2);
    unsafe { libc::raise(libc::SIGTRAP) };
    assert_eq!(f(2, 2), 4);
    assert_eq!(APP_SIGTRAPS.load(Ordering::SeqCst), 1, "the app's SIGTRAP went to the app");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2, "our breakpoints stayed ours");
    detach(id).unwrap();
}

/// A loop whose back edge targets offset 2, inside the first 5 bytes.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn rewriter_test_loop_back(n: u64) -> u64 {
    core::arch::naked_asm!("xor eax, eax", "2:", "inc rax", "cmp rax, rdi", "jb 2b", "ret")
}

#[test]
fn a_branch_into_the_patched_bytes_means_breakpoint_and_detach_restores_the_bytes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_test_loop_back as *const () as usize;
    let bytes = |len| unsafe { std::slice::from_raw_parts(address as *const u8, len).to_vec() };
    let original = bytes(16);
    let seen = Seen::default();
    let id = unsafe { attach_uprobe(address, record, data(&seen)) }.unwrap();
    match rewriter::mechanism(id).unwrap() {
        Mechanism::Breakpoint { reason } => assert!(reason.contains("inside the patched bytes"), "{reason}"),
        other => panic!("expected the breakpoint fallback, got {other:?}"),
    }
    assert_eq!(bytes(1), [0xcc]);
    assert_eq!(black_box(rewriter_test_loop_back)(1000), 1000);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    detach(id).unwrap();
    assert_eq!(bytes(16), original, "detach restores the original bytes");

    // Same for a trampoline site.
    let address = rewriter_test_mix as *const () as usize;
    let mix_bytes = || unsafe { std::slice::from_raw_parts(address as *const u8, 16).to_vec() };
    let original = mix_bytes();
    let id = unsafe { attach_uprobe(address, record, data(&seen)) }.unwrap();
    assert_ne!(mix_bytes(), original);
    detach(id).unwrap();
    assert_eq!(mix_bytes(), original);
}

#[test]
fn attach_in_a_forked_child_patches_the_child_only() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_test_mix as *const () as usize;
    let bytes = || unsafe { std::slice::from_raw_parts(address as *const u8, 16).to_vec() };
    // Use the rewriter in the parent first, so process-wide caches exist.
    let warm = Seen::default();
    detach(unsafe { attach_uprobe(address, record, data(&warm)) }.unwrap()).unwrap();
    let original = bytes();
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        let seen = Seen::default();
        let ok = (|| {
            let id = unsafe { attach_uprobe(address, record, data(&seen)) }.ok()?;
            (rewriter_test_mix(black_box(3), black_box(2)) == expected_mix(3, 2)).then_some(())?;
            (seen.hits.load(Ordering::SeqCst) == 1).then_some(())?;
            // Hold the probe while the parent checks its own text.
            std::thread::sleep(std::time::Duration::from_millis(300));
            detach(id).ok()
        })();
        unsafe { libc::_exit(if ok.is_some() { 0 } else { 1 }) };
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(bytes(), original, "the child's attach wrote the parent's text");
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: status {status:#x}");
    assert_eq!(bytes(), original);
}

/// `push rbx; mov rbx,rdi; lea rax,[rbx+rsi]; pop rbx; ret`
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn rewriter_test_offsets(a: u64, b: u64) -> u64 {
    core::arch::naked_asm!("push rbx", "mov rbx, rdi", "lea rax, [rbx + rsi]", "pop rbx", "ret")
}

#[test]
fn a_probe_inside_a_function_uses_the_breakpoint_and_reports_that_ip() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Offset 4 is `lea rax,[rbx+rsi]`, after `push rbx` (1) and `mov rbx,rdi` (3).
    let address = rewriter_test_offsets as *const () as usize + 4;
    let seen = Seen::default();
    let id = unsafe { attach_uprobe(address, record, data(&seen)) }.unwrap();
    match rewriter::mechanism(id).unwrap() {
        Mechanism::Breakpoint { reason } => assert!(reason.contains("not the entry"), "{reason}"),
        other => panic!("expected the breakpoint fallback, got {other:?}"),
    }
    assert_eq!(black_box(rewriter_test_offsets)(40, 2), 42);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    assert_eq!(seen.ip.load(Ordering::SeqCst) as usize, address);
    assert_eq!(seen.di.load(Ordering::SeqCst), 40);
    assert!(matches!(
        unsafe { attach_uretprobe(address, record, data(&seen)) },
        Err(rewriter::Error::Unsupported { .. })
    ));
    detach(id).unwrap();
    assert_eq!(black_box(rewriter_test_offsets)(1, 2), 3);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn fork_while_another_thread_attaches_and_detaches() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_test_mix as *const () as usize;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let seen = Seen::default();
            while !stop.load(Ordering::Relaxed) {
                let id = unsafe { attach_uprobe(address, record, data(&seen)) }.unwrap();
                detach(id).unwrap();
            }
        });
        for _ in 0..20 {
            let child = unsafe { libc::fork() };
            assert!(child >= 0);
            if child == 0 {
                let seen = Seen::default();
                let ok = unsafe { attach_uprobe(address, record, data(&seen)) }.and_then(|id| {
                    rewriter_test_mix(black_box(1), black_box(1));
                    detach(id)
                });
                let hit = seen.hits.load(Ordering::SeqCst) == 1;
                unsafe { libc::_exit(if ok.is_ok() && hit { 0 } else { 1 }) };
            }
            // The child must finish: a registry inherited locked would hang it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let mut status = 0;
            loop {
                let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
                if r == child {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    unsafe { libc::kill(child, libc::SIGKILL) };
                    stop.store(true, Ordering::Relaxed);
                    panic!("forked child hung");
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: {status:#x}");
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn code_in_a_shared_mapping_is_refused() {
    // A memfd mapped shared and executable, as some JITs do.
    let fd = unsafe { libc::memfd_create(c"rewriter-test-code".as_ptr(), 0) };
    assert!(fd >= 0);
    let code = [0x48, 0x8d, 0x47, 0x01, 0x48, 0x6b, 0xc0, 0x03, 0xc3]; // lea; imul; ret
    assert_eq!(unsafe { libc::write(fd, code.as_ptr() as *const c_void, code.len()) }, code.len() as isize);
    let page = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_SHARED, fd, 0) };
    assert_ne!(page, libc::MAP_FAILED);
    let seen = Seen::default();
    match unsafe { attach_uprobe(page as usize, record, data(&seen)) } {
        Err(rewriter::Error::Unsupported { feature, .. }) => assert!(feature.contains("shared"), "{feature}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    unsafe {
        libc::munmap(page, 4096);
        libc::close(fd);
    }
}

static LATE_APP_SIGTRAPS: AtomicU64 = AtomicU64::new(0);

extern "C" fn late_application_handler(_signal: libc::c_int) {
    LATE_APP_SIGTRAPS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn an_interposed_sigaction_can_route_a_later_application_handler() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(rewriter::owned_signals()[0], libc::SIGTRAP);
    let seen = Seen::default();
    let id = unsafe { attach_uprobe(rewriter_test_tiny as *const () as usize, record, data(&seen)) }.unwrap();
    // What an interposed sigaction does when the app installs a handler now.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = late_application_handler as *const () as usize;
    assert!(rewriter::replace_application_handler(libc::SIGTRAP, Some(&action)).is_some());
    assert!(rewriter::replace_application_handler(libc::SIGUSR1, Some(&action)).is_none());
    unsafe { libc::raise(libc::SIGTRAP) };
    assert_eq!(black_box(rewriter_test_tiny)(2, 3), 5);
    assert_eq!(LATE_APP_SIGTRAPS.load(Ordering::SeqCst), 1);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    let previous = rewriter::replace_application_handler(libc::SIGTRAP, None).unwrap();
    assert_eq!(previous.sa_sigaction, late_application_handler as *const () as usize);
    detach(id).unwrap();
}

/// Reports what a function sees at its entry: `(rsp mod 16) << 32` plus its
/// 7th argument (the first one passed on the stack, at `[rsp + 8]`).
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn rewriter_test_stack_view(_a: u64, _b: u64, _c: u64, _d: u64, _e: u64, _f: u64, _g: u64) -> u64 {
    core::arch::naked_asm!("mov rax, rsp", "and rax, 15", "shl rax, 32", "add rax, [rsp + 8]", "ret")
}

#[test]
fn a_uretprobed_function_sees_the_stack_of_a_normal_call() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_test_stack_view as *const () as usize;
    let call = || black_box(rewriter_test_stack_view)(1, 2, 3, 4, 5, 6, black_box(77));
    let unprobed = call();
    assert_eq!(unprobed, (8 << 32) + 77);
    let (entry, exit) = (Seen::default(), Seen::default());
    let on_exit = unsafe { attach_uretprobe(address, record, data(&exit)) }.unwrap();
    assert_eq!(rewriter::mechanism(on_exit).unwrap(), Mechanism::Trampoline);
    let on_entry = unsafe { attach_uprobe(address, record, data(&entry)) }.unwrap();
    for round in 1..=10 {
        assert_eq!(call(), unprobed, "the probed function saw another stack");
        assert_eq!(entry.hits.load(Ordering::SeqCst), round);
        assert_eq!(exit.hits.load(Ordering::SeqCst), round);
        assert_eq!(exit.ax.load(Ordering::SeqCst), unprobed);
        // The kernel's view: entry sp points at the return address, the
        // return's sp is 8 above it and its ip is that return address.
        assert_eq!(exit.sp.load(Ordering::SeqCst), entry.sp.load(Ordering::SeqCst) + 8);
    }
    detach(on_entry).unwrap();
    detach(on_exit).unwrap();
    assert_eq!(call(), unprobed);
}

/// Tail-calls `rewriter_test_tail_callee` with a transformed argument.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn rewriter_test_tail_caller(_x: u64) -> u64 {
    core::arch::naked_asm!("lea rdi, [rdi + 5]", "imul rdi, rdi, 7", "jmp {callee}", callee = sym rewriter_test_tail_callee)
}

#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn rewriter_test_tail_callee(_x: u64) -> u64 {
    core::arch::naked_asm!("lea rax, [rdi + 1]", "imul rax, rax, 3", "ret")
}

#[test]
fn a_tail_call_between_two_uretprobed_functions_returns_once_through_the_first() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let expected = |x: u64| ((x + 5) * 7 + 1) * 3;
    let (caller_exit, callee_exit) = (Seen::default(), Seen::default());
    let caller = unsafe { attach_uretprobe(rewriter_test_tail_caller as *const () as usize, record, data(&caller_exit)) }.unwrap();
    let callee = unsafe { attach_uretprobe(rewriter_test_tail_callee as *const () as usize, record, data(&callee_exit)) }.unwrap();
    assert_eq!(rewriter::mechanism(caller).unwrap(), Mechanism::Trampoline);
    assert_eq!(rewriter::mechanism(callee).unwrap(), Mechanism::Trampoline);
    for x in 0..20 {
        assert_eq!(black_box(rewriter_test_tail_caller)(black_box(x)), expected(x));
        assert_eq!(caller_exit.ax.load(Ordering::SeqCst), expected(x));
    }
    // The callee shares the caller's frame: its return is the caller's.
    assert_eq!(caller_exit.hits.load(Ordering::SeqCst), 20);
    assert_eq!(callee_exit.hits.load(Ordering::SeqCst), 0);
    assert_eq!(black_box(rewriter_test_tail_callee)(black_box(4)), 15);
    assert_eq!(callee_exit.hits.load(Ordering::SeqCst), 1);
    detach(caller).unwrap();
    detach(callee).unwrap();
    assert_eq!(black_box(rewriter_test_tail_caller)(black_box(1)), expected(1));
}
