//! Compatibility check of perf rings with a real loader-side reader: bcc's
//! `perf_reader` (what bpftrace and bcc tools use for perf buffers), loaded
//! from `libbcc_bpf.so.0`, maps the ring file through an fd exactly as it
//! maps a kernel perf event and reads our records (samples, wrapping
//! records, lost records). Skips with a message when bcc is not installed.

mod common;

use std::ffi::c_void;
use std::os::fd::IntoRawFd;

use common::*;

type RawCb = unsafe extern "C" fn(*mut c_void, *mut c_void, i32);
type LostCb = unsafe extern "C" fn(*mut c_void, u64);

type NewFn = unsafe extern "C" fn(RawCb, LostCb, *mut c_void, i32) -> *mut c_void;
type SetFdFn = unsafe extern "C" fn(*mut c_void, i32);
type MmapFn = unsafe extern "C" fn(*mut c_void) -> i32;
type ReaderFn = unsafe extern "C" fn(*mut c_void);

struct Bcc {
    new: NewFn,
    set_fd: SetFdFn,
    mmap: MmapFn,
    read: ReaderFn,
    free: ReaderFn,
}

fn load_bcc() -> Option<Bcc> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; symbols are checked
    // for null and have the C signatures of bcc's perf_reader.h.
    unsafe {
        let h = libc::dlopen(c"libbcc_bpf.so.0".as_ptr(), libc::RTLD_NOW);
        if h.is_null() {
            return None;
        }
        let sym = |n: &std::ffi::CStr| {
            let p = libc::dlsym(h, n.as_ptr());
            (!p.is_null()).then_some(p)
        };
        Some(Bcc {
            new: std::mem::transmute::<*mut c_void, NewFn>(sym(c"perf_reader_new")?),
            set_fd: std::mem::transmute::<*mut c_void, SetFdFn>(sym(c"perf_reader_set_fd")?),
            mmap: std::mem::transmute::<*mut c_void, MmapFn>(sym(c"perf_reader_mmap")?),
            read: std::mem::transmute::<*mut c_void, ReaderFn>(sym(c"perf_reader_event_read")?),
            free: std::mem::transmute::<*mut c_void, ReaderFn>(sym(c"perf_reader_free")?),
        })
    }
}

#[derive(Default)]
struct Seen {
    samples: Vec<Vec<u8>>,
    lost: u64,
}

unsafe extern "C" fn on_raw(cookie: *mut c_void, raw: *mut c_void, size: i32) {
    // SAFETY: cookie is the &mut Seen passed to perf_reader_new; raw points
    // to `size` bytes for the duration of the callback.
    unsafe {
        let seen = &mut *(cookie as *mut Seen);
        seen.samples.push(std::slice::from_raw_parts(raw as *const u8, size as usize).to_vec());
    }
}

unsafe extern "C" fn on_lost(cookie: *mut c_void, lost: u64) {
    // SAFETY: cookie is the &mut Seen passed to perf_reader_new.
    unsafe { (*(cookie as *mut Seen)).lost += lost };
}

#[test]
fn bcc_perf_reader_reads_our_ring() {
    let bcc = load_bcc()
        .expect("libbcc_bpf.so.0 not found (Debian package libbpfcc, installed with bpfcc-tools by scripts/setup.sh)");
    let t = TempRegistry::new("bcc");
    let ring = t.reg.create_perf_ring(1).unwrap(); // one data page: records wrap often
    let file = std::fs::OpenOptions::new().read(true).write(true).open(ring.path()).unwrap();
    let mut seen = Box::new(Seen::default());
    // SAFETY: bcc API used as documented; the reader maps (1 + 1) pages of
    // our file, which is exactly that long; `seen` outlives the reader.
    unsafe {
        let reader = (bcc.new)(on_raw, on_lost, &mut *seen as *mut Seen as *mut c_void, 1);
        assert!(!reader.is_null());
        // bcc owns the fd from here on (perf_reader_free closes it).
        (bcc.set_fd)(reader, file.into_raw_fd());
        assert_eq!((bcc.mmap)(reader), 0, "bcc could not mmap the ring file");
        let mut expected = Vec::new();
        for round in 0..40u32 {
            for i in 0..9u32 {
                let len = ((round * 7 + i * 13) % 120) as usize;
                let d: Vec<u8> = (0..len).map(|j| (j as u32 ^ round ^ (i << 4)) as u8).collect();
                ring.output(&d).unwrap();
                expected.push(d);
            }
            (bcc.read)(reader);
            assert_eq!(seen.samples.len(), expected.len(), "round {round}");
            for (got, want) in seen.samples.iter().zip(&expected) {
                assert_eq!(&got[..want.len()], &want[..], "payload");
                assert!(got.len() >= want.len() && got[want.len()..].iter().all(|&b| b == 0), "zero padding");
                assert_eq!((got.len() + 4) % 8, 0, "raw size padded like the kernel's");
            }
            seen.samples.clear();
            expected.clear();
        }
        // Overflow: drops are reported to bcc's lost callback.
        let mut dropped = 0;
        while dropped < 5 {
            if ring.output(&[7u8; 100]).is_err() {
                dropped += 1;
            }
        }
        (bcc.read)(reader);
        seen.samples.clear();
        ring.output(b"after").unwrap();
        (bcc.read)(reader);
        assert_eq!(seen.lost, 5);
        assert_eq!(&seen.samples[0][..5], b"after");
        (bcc.free)(reader);
    }
}
