//! QUEUE, STACK, BLOOM_FILTER, LPM_TRIE, STACK_TRACE, RINGBUF semantics and
//! BPF_MAP_CREATE validation errnos.

mod common;

use common::*;
use shm_maps::{map_flags::*, map_type::*, update_flags::*, Errno, MapSpec};

#[test]
fn queue_fifo() {
    let t = TempRegistry::new("queue");
    let m = t.map(QUEUE, 0, 4, 3);
    let mut out = [0u8; 4];
    assert_eq!(m.lookup(&[], &mut out), Err(Errno::ENOENT), "peek empty");
    assert_eq!(m.lookup_and_delete(&[], &mut out), Err(Errno::ENOENT), "pop empty");
    for v in 1..=3u32 {
        m.update(&[], &k32(v), BPF_ANY).unwrap();
    }
    assert_eq!(m.update(&[], &k32(4), BPF_ANY), Err(Errno::E2BIG), "full");
    m.update(&[], &k32(4), BPF_EXIST).unwrap(); // overwrites the oldest (1)
    m.lookup(&[], &mut out).unwrap();
    assert_eq!(u32::from_ne_bytes(out), 2, "peek oldest");
    for want in [2u32, 3, 4] {
        m.lookup_and_delete(&[], &mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), want);
    }
    assert_eq!(m.delete(&[]), Err(Errno::EINVAL));
    assert_eq!(m.get_next_key(None, &mut []), Err(Errno::EINVAL));
    assert_eq!(m.update(&[], &k32(1), BPF_NOEXIST), Err(Errno::EINVAL));
    // SAFETY: value buffers of value_size bytes.
    unsafe {
        assert_eq!(m.prog_push(k32(9).as_ptr(), 0), 0);
        let mut o = [0u8; 4];
        assert_eq!(m.prog_peek(o.as_mut_ptr()), 0);
        assert_eq!(m.prog_pop(o.as_mut_ptr()), 0);
        assert_eq!(u32::from_ne_bytes(o), 9);
        assert_eq!(m.prog_pop(o.as_mut_ptr()), -(libc::ENOENT as i64));
    }
}

#[test]
fn stack_lifo() {
    let t = TempRegistry::new("stack");
    let m = t.map(STACK, 0, 8, 2);
    m.update(&[], &k64(1), BPF_ANY).unwrap();
    m.update(&[], &k64(2), BPF_ANY).unwrap();
    assert_eq!(m.update(&[], &k64(3), BPF_ANY), Err(Errno::E2BIG));
    let mut out = [0u8; 8];
    m.lookup(&[], &mut out).unwrap();
    assert_eq!(u64::from_ne_bytes(out), 2);
    m.lookup_and_delete(&[], &mut out).unwrap();
    assert_eq!(u64::from_ne_bytes(out), 2);
    m.lookup_and_delete(&[], &mut out).unwrap();
    assert_eq!(u64::from_ne_bytes(out), 1);
    assert_eq!(m.lookup_and_delete(&[], &mut out), Err(Errno::ENOENT));
}

#[test]
fn bloom_filter() {
    let t = TempRegistry::new("bloom");
    let m = t
        .reg
        .create_map(&MapSpec { map_type: BLOOM_FILTER, key_size: 0, value_size: 8, max_entries: 1000, map_extra: 3, ..Default::default() })
        .unwrap();
    for v in 0..1000u64 {
        m.update(&[], &k64(v * 2), BPF_ANY).unwrap();
    }
    for v in 0..1000u64 {
        let mut val = k64(v * 2);
        assert_eq!(m.lookup(&[], &mut val), Ok(()), "no false negatives");
    }
    let false_pos = (0..1000u64).filter(|v| m.lookup(&[], &mut k64(v * 2 + 1)).is_ok()).count();
    assert!(false_pos < 200, "false positive rate too high: {false_pos}/1000");
    assert_eq!(m.delete(&[]), Err(Errno::EOPNOTSUPP));
    assert_eq!(m.update(&[], &k64(1), BPF_EXIST), Err(Errno::EINVAL));
    // SAFETY: value buffers of value_size bytes.
    unsafe {
        assert_eq!(m.prog_push(k64(77777).as_ptr(), 0), 0);
        assert_eq!(m.prog_peek(k64(77777).as_ptr() as *mut u8), 0);
    }
}

fn lpm_key(plen: u32, ip: [u8; 4]) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&plen.to_ne_bytes());
    k[4..8].copy_from_slice(&ip);
    k
}

#[test]
fn lpm_trie_longest_prefix() {
    let t = TempRegistry::new("lpm");
    let spec = MapSpec { map_type: LPM_TRIE, key_size: 8, value_size: 4, max_entries: 16, map_flags: BPF_F_NO_PREALLOC, ..Default::default() };
    let m = t.reg.create_map(&spec).unwrap();
    m.update(&lpm_key(8, [10, 0, 0, 0]), &k32(8), BPF_ANY).unwrap();
    m.update(&lpm_key(16, [10, 1, 99, 99]), &k32(16), BPF_ANY).unwrap(); // host bits ignored
    m.update(&lpm_key(24, [10, 1, 2, 0]), &k32(24), BPF_ANY).unwrap();
    m.update(&lpm_key(0, [0, 0, 0, 0]), &k32(0), BPF_ANY).unwrap();
    let mut out = [0u8; 4];
    let look = |ip: [u8; 4], out: &mut [u8; 4]| m.lookup(&lpm_key(32, ip), out).map(|_| u32::from_ne_bytes(*out));
    assert_eq!(look([10, 1, 2, 3], &mut out), Ok(24));
    assert_eq!(look([10, 1, 3, 3], &mut out), Ok(16));
    assert_eq!(look([10, 9, 3, 3], &mut out), Ok(8));
    assert_eq!(look([11, 0, 0, 1], &mut out), Ok(0));
    assert_eq!(m.update(&lpm_key(33, [0; 4]), &k32(1), BPF_ANY), Err(Errno::EINVAL));
    assert_eq!(m.update(&lpm_key(8, [10, 0, 0, 0]), &k32(1), BPF_NOEXIST), Err(Errno::EEXIST));
    m.delete(&lpm_key(0, [0; 4])).unwrap();
    assert_eq!(look([11, 0, 0, 1], &mut out), Err(Errno::ENOENT));
    assert_eq!(m.delete(&lpm_key(0, [0; 4])), Err(Errno::ENOENT));
    // Iteration visits each key once, most specific first.
    let mut next = [0u8; 8];
    let mut key: Option<[u8; 8]> = None;
    let mut plens = Vec::new();
    while m.get_next_key(key.as_ref().map(|k| &k[..]), &mut next).is_ok() {
        plens.push(u32::from_ne_bytes(next[0..4].try_into().unwrap()));
        key = Some(next);
    }
    assert_eq!(plens, vec![24, 16, 8]);
    // Full: ENOSPC, like the kernel trie.
    for i in 0..13u8 {
        m.update(&lpm_key(32, [1, 2, 3, i]), &k32(1), BPF_ANY).unwrap();
    }
    assert_eq!(m.update(&lpm_key(32, [9, 9, 9, 9]), &k32(1), BPF_ANY), Err(Errno::ENOSPC));
    // SAFETY: key buffer of key_size bytes.
    unsafe { assert!(!m.prog_lookup(lpm_key(32, [10, 1, 2, 200]).as_ptr()).is_null()) };
}

#[test]
fn stack_trace_ids() {
    let t = TempRegistry::new("stacks");
    let m = t.map(STACK_TRACE, 4, 8 * 8, 64);
    let a = [0x401000u64, 0x402000, 0x403000];
    let ia = m.get_stackid(&a, 0);
    assert!(ia >= 0);
    assert_eq!(m.get_stackid(&a, 0), ia, "same stack, same id");
    // Buckets are picked by a per-map random seed: a second stack may land
    // in a's bucket (1 in 64 here), which is EEXIST without
    // BPF_F_REUSE_STACKID, as in the kernel, and stores nothing; take the
    // first that does not.
    let ib = (0..64u64)
        .map(|n| m.get_stackid(&[0x501000 + n, 0x502000], 0))
        .find(|&id| id != -(libc::EEXIST as i64))
        .expect("a stack in another bucket");
    assert!(ib >= 0 && ib != ia);
    let mut out = [0xffu8; 64];
    m.lookup(&k32(ia as u32), &mut out).unwrap();
    let ips: Vec<u64> = out.chunks(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap())).collect();
    assert_eq!(&ips[..3], &a);
    assert!(ips[3..].iter().all(|&x| x == 0));
    assert_eq!(m.get_stackid(&[], 0), -(libc::EFAULT as i64));
    assert_eq!(m.update(&k32(0), &[0; 64], BPF_ANY), Err(Errno::EINVAL));
    let mut ids = Vec::new();
    let mut next = [0u8; 4];
    let mut key: Option<[u8; 4]> = None;
    while m.get_next_key(key.as_ref().map(|k| &k[..]), &mut next).is_ok() {
        ids.push(u32::from_ne_bytes(next) as i64);
        key = Some(next);
    }
    ids.sort();
    let mut want = vec![ia, ib];
    want.sort();
    assert_eq!(ids, want);
    m.delete(&k32(ia as u32)).unwrap();
    assert_eq!(m.delete(&k32(ia as u32)), Err(Errno::ENOENT));
    assert_eq!(m.lookup(&k32(ia as u32), &mut out), Err(Errno::ENOENT));
}

#[test]
fn ringbuf_records() {
    let t = TempRegistry::new("ringbuf");
    let m = t.map(RINGBUF, 0, 0, 4096);
    assert_eq!(m.ringbuf_query(shm_maps::BPF_RB_RING_SIZE), 4096);
    assert_eq!(m.ringbuf_output(b"one", 0), 0);
    let p = m.ringbuf_reserve(10, 0);
    assert!(!p.is_null());
    let d = m.ringbuf_reserve(5, 0);
    // SAFETY: p/d come from ringbuf_reserve with ≥ 10/5 bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(b"two-twotwo".as_ptr(), p, 10);
        shm_maps::ringbuf_discard(d, 0);
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    assert_eq!(m.ringbuf_consume(|r| got.push(r.to_vec())), 1, "stops at the BUSY record");
    // SAFETY: p was reserved above and not yet committed.
    unsafe { shm_maps::ringbuf_submit(p, 0) };
    m.ringbuf_consume(|r| got.push(r.to_vec()));
    assert_eq!(got, vec![b"one".to_vec(), b"two-twotwo".to_vec()]);
    // Fill and wrap many times.
    for round in 0..100u32 {
        let mut n = 0;
        while m.ringbuf_output(&[round as u8; 100], 0) == 0 {
            n += 1;
        }
        assert_eq!(m.ringbuf_output(&[0; 100], 0), -(libc::EAGAIN as i64));
        let mut c = 0;
        m.ringbuf_consume(|r| {
            assert_eq!(r, &[round as u8; 100][..]);
            c += 1;
        });
        assert_eq!(c, n);
    }
    assert_eq!(m.lookup(&[], &mut []), Err(Errno::ENOTSUPP));
    assert!(m.ringbuf_reserve(8, 1).is_null(), "flags must be 0");
    assert!(m.ringbuf_reserve(5000, 0).is_null(), "larger than the ring");
}

#[test]
fn ringbuf_loader_mapping_sees_records() {
    let t = TempRegistry::new("ringbuf-mmap");
    let m = t.map(RINGBUF, 0, 0, 8192);
    let page = 4096usize;
    let cons = m.ringbuf_mmap_for_loader(0, page, libc::PROT_READ | libc::PROT_WRITE, None).unwrap();
    let prod = m.ringbuf_mmap_for_loader(page, page + 2 * 8192, libc::PROT_READ, None).unwrap();
    // Write a record that wraps the end of the data area.
    for _ in 0..7 {
        assert_eq!(m.ringbuf_output(&[1u8; 1000], 0), 0);
    }
    m.ringbuf_consume(|_| {});
    assert_eq!(m.ringbuf_output(&[7u8; 3000], 0), 0);
    // Read it like libbpf: consumer_pos from the consumer page, the header
    // and data through the double-mapped producer mapping.
    // SAFETY: mappings returned above have the sizes libbpf asks for.
    unsafe {
        let cpos = *(cons as *const u64);
        let ppos = *(prod as *const u64);
        assert_eq!(ppos - cpos, 3008);
        let data = prod.add(page);
        let hdr = data.add((cpos as usize) & 8191);
        assert_eq!(*(hdr as *const u32), 3000);
        let rec = std::slice::from_raw_parts(hdr.add(8), 3000);
        assert!(rec.iter().all(|&b| b == 7), "wrapped record is contiguous");
        *(cons as *mut u64) = ppos; // the loader consumes
        libc::munmap(cons as *mut _, page);
        libc::munmap(prod as *mut _, page + 2 * 8192);
    }
    assert_eq!(m.ringbuf_query(shm_maps::BPF_RB_AVAIL_DATA), 0);
}

/// The kernel's rules for mapping a ring buffer (`ringbuf_map_mmap_kern`):
/// only the consumer page may be writable, anything inside the layout
/// `[consumer | producer | data | data]` may be read, nothing beyond it.
#[test]
fn ringbuf_loader_mappings_follow_the_kernels_rules() {
    let t = TempRegistry::new("ringbuf-mmap-rules");
    let m = t.map(RINGBUF, 0, 0, 8192);
    let page = 4096usize;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let layout = 2 * page + 2 * 8192;
    let eperm = Errno(libc::EPERM);
    assert_eq!(m.ringbuf_mmap_for_loader(page, page, rw, None), Err(eperm), "producer page writable");
    assert_eq!(m.ringbuf_mmap_for_loader(0, 2 * page, rw, None), Err(eperm), "more than the consumer page writable");
    assert_eq!(m.ringbuf_mmap_for_loader(2 * page, page, rw, None), Err(eperm), "data writable");
    assert_eq!(m.ringbuf_mmap_for_loader(0, layout + page, libc::PROT_READ, None), Err(Errno::EINVAL), "beyond the layout");
    assert_eq!(m.ringbuf_mmap_for_loader(layout, page, libc::PROT_READ, None), Err(Errno::EINVAL), "past the end");
    assert_eq!(m.ringbuf_mmap_for_loader(100, page, libc::PROT_READ, None), Err(Errno::EINVAL), "unaligned offset");
    assert_eq!(m.ringbuf_mmap_for_loader(0, 0, libc::PROT_READ, None), Err(Errno::EINVAL), "empty");
    // Any range inside the layout reads the same bytes as the full mapping,
    // the second copy of the data included.
    assert_eq!(m.ringbuf_output(&[9u8; 100], 0), 0);
    let whole = m.ringbuf_mmap_for_loader(0, layout, libc::PROT_READ, None).unwrap();
    let second_copy = m.ringbuf_mmap_for_loader(2 * page + 8192, 8192, libc::PROT_READ, None).unwrap();
    let straddling = m.ringbuf_mmap_for_loader(page + 8192, 2 * page, libc::PROT_READ, None).unwrap();
    // SAFETY: the mappings have the lengths asked for above.
    unsafe {
        let data = std::slice::from_raw_parts(whole.add(2 * page), 8192);
        assert_eq!(*(data.as_ptr() as *const u32), 100, "header of the record");
        assert_eq!(std::slice::from_raw_parts(second_copy, 8192), data, "second copy of the data");
        assert_eq!(std::slice::from_raw_parts(straddling, page), &data[8192 - page..], "end of the first copy");
        assert_eq!(std::slice::from_raw_parts(straddling.add(page), page), &data[..page], "start of the second");
        // A read-only mapping cannot be made writable later (no VM_MAYWRITE).
        assert_eq!(libc::mprotect(whole.cast(), page, rw), -1);
        assert_eq!(*libc::__errno_location(), libc::EACCES);
        for (p, len) in [(whole, layout), (second_copy, 8192), (straddling, 2 * page)] {
            libc::munmap(p.cast(), len);
        }
    }
}

fn create_err(spec: MapSpec) -> Errno {
    let t = TempRegistry::new("create-err");
    t.reg.create_map(&spec).expect_err("creation must fail").errno()
}

#[test]
fn creation_validation_errnos() {
    let s = |map_type, key_size, value_size, max_entries| MapSpec { map_type, key_size, value_size, max_entries, ..Default::default() };
    assert_eq!(create_err(s(HASH, 0, 8, 4)), Errno::EINVAL);
    assert_eq!(create_err(s(HASH, 8, 0, 4)), Errno::EINVAL);
    assert_eq!(create_err(s(HASH, 8, 8, 0)), Errno::EINVAL);
    // The kernel (6.18, measured) takes key + value < 4 MiB - 48.
    assert_eq!(create_err(s(HASH, (1 << 22) - 48 - 8, 8, 4)), Errno::E2BIG);
    let t = TempRegistry::new("long-keys");
    t.reg.create_map(&s(PERCPU_HASH, 1024, 8, 4)).expect("bpftrace 0.23 keys strings of 1024 bytes");
    assert_eq!(create_err(s(PERCPU_HASH, 8, 32769, 4)), Errno::E2BIG);
    assert_eq!(create_err(s(ARRAY, 8, 8, 4)), Errno::EINVAL);
    assert_eq!(create_err(s(PERF_EVENT_ARRAY, 4, 8, 4)), Errno::EINVAL);
    assert_eq!(create_err(s(QUEUE, 4, 8, 4)), Errno::EINVAL);
    assert_eq!(create_err(s(STACK_TRACE, 4, 12, 4)), Errno::EINVAL);
    assert_eq!(create_err(s(LPM_TRIE, 8, 4, 4)), Errno::EINVAL, "LPM needs BPF_F_NO_PREALLOC");
    assert_eq!(create_err(s(RINGBUF, 0, 0, 5000)), Errno::EINVAL);
    assert_eq!(create_err(s(12 /* ARRAY_OF_MAPS */, 4, 4, 4)), Errno::EINVAL);
    assert_eq!(create_err(MapSpec { map_flags: 1 << 20, ..s(HASH, 8, 8, 4) }), Errno::EINVAL);
    assert_eq!(create_err(MapSpec { map_flags: BPF_F_NO_PREALLOC, ..s(LRU_HASH, 8, 8, 4) }), Errno::ENOTSUPP);
    assert_eq!(create_err(MapSpec { map_flags: BPF_F_STACK_BUILD_ID, ..s(STACK_TRACE, 4, 64, 4) }), Errno::EOPNOTSUPP);
    // Too large to back: ENOMEM, and the registry still works afterwards.
    let t = TempRegistry::new("enomem");
    let e = t.reg.create_map(&s(ARRAY, 4, 1 << 22, u32::MAX)).unwrap_err();
    assert_eq!(e.errno(), Errno::ENOMEM, "{e}");
    t.map(HASH, 8, 8, 16);
    assert_eq!(t.reg.maps().len(), 1, "the failed map left nothing behind");
}
