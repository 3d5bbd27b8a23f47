//! Live patching under load: worker threads call a probed function in a
//! tight loop while another thread attaches and detaches it thousands of
//! times. No crash, every result correct, and every call that starts after
//! `attach` returns and finishes before `detach` is called is counted.
//! Also: re-entrant hits (a handler calling a probed function) are skipped
//! and counted, never recursed into.

use rewriter::{attach_uprobe, attach_uretprobe, detach, PtRegs};
use std::ffi::c_void;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

#[inline(never)]
#[no_mangle]
pub extern "C" fn rewriter_torture_target(x: u64) -> u64 {
    let mut v = black_box(x);
    v = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    v ^= v >> 29;
    black_box(v)
}

fn expected(x: u64) -> u64 {
    let v = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    v ^ (v >> 29)
}

static STARTED: AtomicU64 = AtomicU64::new(0);
static FINISHED: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn count_entry(regs: *mut PtRegs, data: *mut c_void) {
    let counter = unsafe { &*(data as *const AtomicU64) };
    // The argument must arrive intact (workers pass values below 2^40).
    if unsafe { (*regs).di } < 1 << 40 {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe extern "C" fn count_return(regs: *mut PtRegs, data: *mut c_void) {
    let counter = unsafe { &*(data as *const AtomicU64) };
    // The return value is the hash of a value below 2^40: never 0 here.
    if unsafe { (*regs).ax } != 0 {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn attach_detach_thousands_of_times_while_threads_call_the_function() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_torture_target as *const () as usize;
    let stop = AtomicBool::new(false);
    let rounds = if cfg!(debug_assertions) { 1000 } else { 3000 };
    /// Stops the workers even if the attaching thread panics.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop_workers = StopOnDrop(&stop);
        for t in 0..3u64 {
            let stop = &stop;
            s.spawn(move || {
                let f: extern "C" fn(u64) -> u64 = black_box(rewriter_torture_target);
                let mut i = (t << 32) + 1;
                while !stop.load(Ordering::Relaxed) {
                    STARTED.fetch_add(1, Ordering::SeqCst);
                    let r = f(i);
                    FINISHED.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(r, expected(i), "wrong result while patching");
                    i += 1;
                }
            });
        }
        let mut counted_total = 0;
        for round in 0..rounds {
            let hits = AtomicU64::new(0);
            let finished_before_attach = FINISHED.load(Ordering::SeqCst);
            let id = if round % 4 == 3 {
                unsafe { attach_uretprobe(address, count_return, &hits as *const AtomicU64 as *mut c_void) }
            } else {
                unsafe { attach_uprobe(address, count_entry, &hits as *const AtomicU64 as *mut c_void) }
            }
            .unwrap();
            let started_after_attach = STARTED.load(Ordering::SeqCst);
            // Let the workers run a little with the probe in place.
            let target = started_after_attach + 20;
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
            while FINISHED.load(Ordering::SeqCst) < target && std::time::Instant::now() < deadline {
                std::hint::spin_loop();
            }
            let finished_before_detach = FINISHED.load(Ordering::SeqCst);
            detach(id).unwrap();
            let started_after_detach = STARTED.load(Ordering::SeqCst);
            let hits = hits.load(Ordering::SeqCst);
            let must_count = finished_before_detach.saturating_sub(started_after_attach);
            let may_count = started_after_detach - finished_before_attach;
            assert!(
                hits >= must_count && hits <= may_count,
                "round {round}: {hits} hits, expected between {must_count} and {may_count}"
            );
            counted_total += hits;
        }
        assert!(counted_total > 0);
    });
}

static INNER_HITS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn calls_the_probed_function(_regs: *mut PtRegs, data: *mut c_void) {
    let counter = unsafe { &*(data as *const AtomicU64) };
    counter.fetch_add(1, Ordering::Relaxed);
    // Re-entrant: this hit must be skipped, not recursed into.
    let f: extern "C" fn(u64) -> u64 = black_box(rewriter_torture_target);
    black_box(f(7));
    INNER_HITS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn a_probe_hit_from_inside_a_handler_is_skipped_and_counted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_torture_target as *const () as usize;
    let hits = AtomicU64::new(0);
    let before = rewriter::counters().skipped_reentrant;
    let id = unsafe { attach_uprobe(address, calls_the_probed_function, &hits as *const AtomicU64 as *mut c_void) }.unwrap();
    for i in 0..10 {
        assert_eq!(rewriter_torture_target(black_box(i)), expected(i));
    }
    detach(id).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 10);
    assert_eq!(INNER_HITS.load(Ordering::SeqCst), 10);
    assert!(rewriter::counters().skipped_reentrant >= before + 10);
}

/// `push rbx; mov rbx,rdi; mov rax,rbx; pop rbx; ret`: the jump displaces
/// three instructions, so attaching needs the interior rendezvous.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn rewriter_torture_three_instructions(x: u64) -> u64 {
    core::arch::naked_asm!("push rbx", "mov rbx, rdi", "mov rax, rbx", "pop rbx", "ret")
}

#[test]
fn attaching_does_not_interrupt_a_sleeping_system_call() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_torture_three_instructions as *const () as usize;
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read_end, write_end) = (fds[0], fds[1]);
    let sleeper = std::thread::spawn(move || {
        // poll() is never restarted after a signal handler: it would fail
        // with EINTR if the rendezvous signalled this thread.
        let mut pfd = libc::pollfd { fd: read_end, events: libc::POLLIN, revents: 0 };
        let r = unsafe { libc::poll(&mut pfd, 1, 20_000) };
        (r, std::io::Error::last_os_error().raw_os_error())
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let hits = AtomicU64::new(0);
    for _ in 0..20 {
        let id = unsafe { attach_uprobe(address, count_entry, &hits as *const AtomicU64 as *mut c_void) }.unwrap();
        assert_eq!(rewriter::mechanism(id).unwrap(), rewriter::Mechanism::Trampoline);
        assert_eq!(black_box(rewriter_torture_three_instructions)(41), 41);
        detach(id).unwrap();
    }
    assert_eq!(hits.load(Ordering::SeqCst), 20);
    assert_eq!(unsafe { libc::write(write_end, b"x".as_ptr() as *const c_void, 1) }, 1);
    let (r, errno) = sleeper.join().unwrap();
    assert_eq!(r, 1, "poll was interrupted (errno {errno:?})");
    unsafe {
        libc::close(read_end);
        libc::close(write_end);
    }
}

static MALLOC_HITS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn allocating_handler(_regs: *mut PtRegs, _data: *mut c_void) {
    MALLOC_HITS.fetch_add(1, Ordering::Relaxed);
    // Allocates (malloc, not calloc): calls the probed malloc from inside
    // the handler.
    let mut v: Vec<u8> = Vec::with_capacity(black_box(64));
    v.push(1);
    black_box(v);
}

#[test]
fn a_probe_on_malloc_whose_handler_allocates() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let malloc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) } as usize;
    let skipped_before = rewriter::counters().skipped_reentrant;
    let id = unsafe { attach_uprobe(malloc, allocating_handler, std::ptr::null_mut()) }.unwrap();
    let mut boxes = Vec::new();
    for i in 0..100u64 {
        boxes.push(black_box(Box::new([i; 8])));
    }
    detach(id).unwrap();
    assert!(boxes.iter().enumerate().all(|(i, b)| b[7] == i as u64));
    let hits = MALLOC_HITS.load(Ordering::Relaxed);
    assert!(hits >= 100, "{hits} malloc hits");
    assert!(rewriter::counters().skipped_reentrant - skipped_before >= hits, "each handler's own malloc is skipped");
}

#[test]
fn thread_slots_are_recycled_when_threads_exit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let address = rewriter_torture_target as *const () as usize;
    let hits = AtomicU64::new(0);
    let exhausted_before = rewriter::counters().thread_slots_exhausted;
    let id = unsafe { attach_uprobe(address, count_entry, &hits as *const AtomicU64 as *mut c_void) }.unwrap();
    // More threads over time than there are slots (4096).
    for _ in 0..100 {
        std::thread::scope(|s| {
            for i in 0..50u64 {
                s.spawn(move || assert_eq!(rewriter_torture_target(black_box(i + 1)), expected(i + 1)));
            }
        });
    }
    detach(id).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 5000);
    assert_eq!(rewriter::counters().thread_slots_exhausted, exhausted_before);
}
