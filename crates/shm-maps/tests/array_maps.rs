//! ARRAY / PERCPU_ARRAY / PROG_ARRAY semantics and errnos.

mod common;

use common::*;
use shm_maps::{map_type::*, update_flags::*, Errno};

#[test]
fn array_semantics() {
    let t = TempRegistry::new("array");
    let m = t.map(ARRAY, 4, 12, 10);
    let mut out = [0xffu8; 12];
    m.lookup(&k32(3), &mut out).unwrap();
    assert_eq!(out, [0; 12], "elements exist and start zeroed");
    assert_eq!(m.lookup(&k32(10), &mut out), Err(Errno::ENOENT));
    assert_eq!(m.update(&k32(10), &[1; 12], BPF_ANY), Err(Errno::E2BIG));
    assert_eq!(m.update(&k32(1), &[1; 12], BPF_NOEXIST), Err(Errno::EEXIST));
    assert_eq!(m.update(&k32(1), &[1; 12], 3), Err(Errno::EINVAL));
    m.update(&k32(1), &[5; 12], BPF_EXIST).unwrap();
    m.lookup(&k32(1), &mut out).unwrap();
    assert_eq!(out, [5; 12]);
    assert_eq!(m.delete(&k32(1)), Err(Errno::EINVAL), "array elements cannot be deleted");
    assert_eq!(m.lookup_and_delete(&k32(1), &mut out), Err(Errno::ENOTSUPP));
    let mut next = [0u8; 4];
    m.get_next_key(None, &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), 0);
    m.get_next_key(Some(&k32(4)), &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), 5);
    m.get_next_key(Some(&k32(100)), &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), 0, "out-of-range key restarts");
    assert_eq!(m.get_next_key(Some(&k32(9)), &mut next), Err(Errno::ENOENT));
    // SAFETY: key/value buffers of the right sizes.
    unsafe {
        let p = m.prog_lookup(k32(1).as_ptr());
        assert_eq!(std::slice::from_raw_parts(p, 12), &[5; 12]);
        assert!(m.prog_lookup(k32(10).as_ptr()).is_null());
        assert_eq!(m.prog_update(k32(2).as_ptr(), [9u8; 12].as_ptr(), BPF_ANY), 0);
        assert_eq!(m.prog_update(k32(20).as_ptr(), [9u8; 12].as_ptr(), BPF_ANY), -(libc::E2BIG as i64));
        assert_eq!(m.prog_delete(k32(2).as_ptr()), -(libc::EINVAL as i64));
    }
    m.lookup(&k32(2), &mut out).unwrap();
    assert_eq!(out, [9; 12]);
}

#[test]
fn percpu_array_layout() {
    let t = TempRegistry::new("pcpu-array");
    let m = t.map(PERCPU_ARRAY, 4, 8, 4);
    let n = shm_maps::cpu::nr_possible() as usize;
    assert_eq!(m.syscall_value_size(), 8 * n);
    // SAFETY: key buffer of 4 bytes; the value pointer is 8-aligned u64.
    unsafe {
        let p = m.prog_lookup(k32(0).as_ptr()) as *mut u64;
        *p += 5;
    }
    let mut out = vec![0u8; 8 * n];
    m.lookup(&k32(0), &mut out).unwrap();
    let sum: u64 = out.chunks(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap())).sum();
    assert_eq!(sum, 5);
    let vals: Vec<u8> = (0..8 * n).map(|i| i as u8).collect();
    m.update(&k32(3), &vals, BPF_ANY).unwrap();
    m.lookup(&k32(3), &mut out).unwrap();
    assert_eq!(out, vals);
}

#[test]
fn id_arrays() {
    let t = TempRegistry::new("prog-array");
    let m = t.map(PROG_ARRAY, 4, 4, 4);
    let mut out = [0u8; 4];
    assert_eq!(m.lookup(&k32(0), &mut out), Err(Errno::ENOENT));
    assert_eq!(m.update(&k32(0), &k32(17), BPF_NOEXIST), Err(Errno::EINVAL), "fd arrays take only BPF_ANY");
    assert_eq!(m.update(&k32(4), &k32(17), BPF_ANY), Err(Errno::E2BIG));
    m.update(&k32(1), &k32(17), BPF_ANY).unwrap();
    m.lookup(&k32(1), &mut out).unwrap();
    assert_eq!(u32::from_ne_bytes(out), 17);
    assert_eq!(m.id_at(1), Some(17));
    assert_eq!(m.id_at(0), None);
    assert_eq!(m.id_at(99), None);
    m.delete(&k32(1)).unwrap();
    assert_eq!(m.delete(&k32(1)), Err(Errno::ENOENT));
    assert_eq!(m.delete(&k32(9)), Err(Errno::E2BIG));
}
