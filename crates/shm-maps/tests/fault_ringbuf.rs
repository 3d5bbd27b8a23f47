//! A producer SIGKILLed between `bpf_ringbuf_reserve` and submit leaves a
//! BUSY record that would block libbpf's consumer forever; the ring must
//! discard it once its owner is seen dead and keep delivering.
//! One #[test] in this binary, so fork happens with no other test threads.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shm_maps::map_type::RINGBUF;

#[test]
fn busy_record_of_a_killed_producer_is_discarded() {
    let t = TempRegistry::new("rb-fault");
    let m = t.map(RINGBUF, 0, 0, 4096);
    assert_eq!(m.ringbuf_output(b"before", 0), 0);
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only reserves, reports, and waits to be killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let p = m.ringbuf_reserve(32, 0);
        // SAFETY: writing one byte to our pipe end, then waiting.
        unsafe {
            libc::write(fds[1], [(!p.is_null()) as u8].as_ptr() as *const _, 1);
            libc::pause();
            libc::_exit(0);
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte from our pipe end.
    assert_eq!(unsafe { libc::read(fds[0], b.as_mut_ptr() as *mut _, 1) }, 1);
    assert_eq!(b[0], 1, "child reserved a record");
    assert_eq!(m.ringbuf_output(b"after", 0), 0);
    let mut got: Vec<Vec<u8>> = Vec::new();
    m.ringbuf_consume(|d| got.push(d.to_vec()));
    assert_eq!(got, vec![b"before".to_vec()], "the live producer's BUSY record blocks the consumer");
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 2 && Instant::now() < deadline {
        m.ringbuf_consume(|d| got.push(d.to_vec()));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(got, vec![b"before".to_vec(), b"after".to_vec()], "dead record discarded, later record delivered");
    // The ring keeps working.
    assert_eq!(m.ringbuf_output(b"again", 0), 0);
    m.ringbuf_consume(|d| got.push(d.to_vec()));
    assert_eq!(got.last().unwrap(), b"again");
}
