//! Oracle test: the same operation sequences against real kernel maps (via
//! bpf(2)) and ours; errnos (and looked-up bytes) must agree. Needs root and
//! a kernel with eBPF; otherwise it prints why and passes without checking.

mod common;

use common::*;
use shm_maps::{map_flags::*, map_type::*, update_flags::*, Errno, Map, MapSpec};

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_MAP_DELETE_ELEM: i32 = 3;
const BPF_MAP_GET_NEXT_KEY: i32 = 4;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: i32 = 21;

fn bpf(cmd: i32, attr: &mut [u8; 128]) -> Result<i32, Errno> {
    // SAFETY: attr is a 128-byte, zero-padded union bpf_attr.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)))
    } else {
        Ok(r as i32)
    }
}

struct KernelMap(i32);

impl Drop for KernelMap {
    fn drop(&mut self) {
        // SAFETY: closing our own fd.
        unsafe { libc::close(self.0) };
    }
}

fn kernel_create(s: &MapSpec) -> Result<KernelMap, Errno> {
    let mut a = [0u8; 128];
    for (i, v) in [s.map_type, s.key_size, s.value_size, s.max_entries, s.map_flags].iter().enumerate() {
        a[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    a[64..72].copy_from_slice(&s.map_extra.to_ne_bytes());
    bpf(BPF_MAP_CREATE, &mut a).map(KernelMap)
}

fn kernel_elem(cmd: i32, fd: i32, key: Option<&[u8]>, value: Option<&mut [u8]>, flags: u64) -> Result<(), Errno> {
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&fd.to_ne_bytes());
    let k = key.map_or(0, |k| k.as_ptr() as u64);
    let v = value.map_or(0, |v| v.as_mut_ptr() as u64);
    a[8..16].copy_from_slice(&k.to_ne_bytes());
    a[16..24].copy_from_slice(&v.to_ne_bytes());
    a[24..32].copy_from_slice(&flags.to_ne_bytes());
    bpf(cmd, &mut a).map(|_| ())
}

#[derive(Clone, Debug)]
enum Op {
    Update(Vec<u8>, Vec<u8>, u64),
    Lookup(Vec<u8>),
    Delete(Vec<u8>),
    NextKey(Option<Vec<u8>>),
    LookupAndDelete(Vec<u8>),
}

fn run_ours(m: &Map, op: &Op) -> (Result<(), Errno>, Vec<u8>) {
    let vs = m.syscall_value_size().max(m.value_size() as usize);
    let mut out = vec![0u8; vs];
    let r = match op {
        Op::Update(k, v, f) => m.update(k, v, *f),
        Op::Lookup(k) => m.lookup(k, &mut out),
        Op::Delete(k) => m.delete(k),
        Op::NextKey(k) => {
            out = vec![0u8; m.key_size() as usize];
            m.get_next_key(k.as_deref(), &mut out)
        }
        Op::LookupAndDelete(k) => m.lookup_and_delete(k, &mut out),
    };
    (r, out)
}

fn run_kernel(fd: i32, value_len: usize, key_len: usize, op: &Op) -> (Result<(), Errno>, Vec<u8>) {
    let mut out = vec![0u8; value_len];
    let key = |k: &Vec<u8>| if k.is_empty() { None } else { Some(k.clone()) };
    let r = match op {
        Op::Update(k, v, f) => {
            let mut v = v.clone();
            kernel_elem(BPF_MAP_UPDATE_ELEM, fd, key(k).as_deref(), Some(&mut v), *f)
        }
        Op::Lookup(k) => kernel_elem(BPF_MAP_LOOKUP_ELEM, fd, key(k).as_deref(), Some(&mut out), 0),
        Op::Delete(k) => kernel_elem(BPF_MAP_DELETE_ELEM, fd, key(k).as_deref(), None, 0),
        Op::NextKey(k) => {
            out = vec![0u8; key_len.max(1)];
            kernel_elem(BPF_MAP_GET_NEXT_KEY, fd, k.as_deref().filter(|k| !k.is_empty()), Some(&mut out), 0)
        }
        Op::LookupAndDelete(k) => kernel_elem(BPF_MAP_LOOKUP_AND_DELETE_ELEM, fd, key(k).as_deref(), Some(&mut out), 0),
    };
    (r, out)
}

/// The oracle needs kernel eBPF: root, and `BPF_MAP_CREATE` working.
fn require_kernel() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the kernel oracle needs root");
    if let Err(e) = kernel_create(&MapSpec { map_type: ARRAY, key_size: 4, value_size: 4, max_entries: 1, ..Default::default() }) {
        panic!("the kernel oracle needs kernel eBPF: bpf(BPF_MAP_CREATE) failed with {e}");
    }
}

fn compare(name: &str, spec: MapSpec, ops: &[Op], compare_bytes: bool) {
    let t = TempRegistry::new("oracle");
    let (kernel, ours) = (kernel_create(&spec), t.reg.create_map(&spec));
    match (&kernel, &ours) {
        (Ok(_), Ok(_)) => {}
        (Err(k), Err(o)) => {
            assert_eq!(*k, o.errno(), "{name}: create errno (ours: {o})");
            return;
        }
        (k, o) => panic!("{name}: create differs: kernel {:?}, ours {:?}", k.as_ref().map(|_| ()), o.as_ref().map(|_| ())),
    }
    let (k, m) = (kernel.unwrap(), ours.unwrap());
    let vlen = m.syscall_value_size().max(m.value_size() as usize);
    for (i, op) in ops.iter().enumerate() {
        let (kr, kout) = run_kernel(k.0, vlen, m.key_size() as usize, op);
        let (or, oout) = run_ours(&m, op);
        assert_eq!(kr, or, "{name}: op #{i} {op:?}");
        if compare_bytes && kr.is_ok() && !matches!(op, Op::NextKey(_)) {
            assert_eq!(kout, oout, "{name}: op #{i} {op:?} bytes");
        }
    }
}

fn u32v(v: u32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn u64v(v: u64) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

#[test]
#[ignore = "needs root and kernel eBPF: cargo test -p shm-maps --test kernel_oracle -- --ignored"]
fn errnos_match_the_kernel() {
    require_kernel();
    use Op::*;
    let spec = |map_type, key_size, value_size, max_entries| MapSpec { map_type, key_size, value_size, max_entries, ..Default::default() };
    let ncpus = shm_maps::cpu::nr_possible() as usize;

    for t in [HASH, LRU_HASH] {
        compare(
            "hash",
            spec(t, 8, 8, 2),
            &[
                Lookup(u64v(1)),
                Update(u64v(1), u64v(10), BPF_EXIST),
                Update(u64v(1), u64v(10), BPF_NOEXIST),
                Update(u64v(1), u64v(11), BPF_NOEXIST),
                Update(u64v(1), u64v(12), BPF_EXIST),
                Lookup(u64v(1)),
                Update(u64v(1), u64v(12), 8),
                Update(u64v(2), u64v(2), BPF_ANY),
                NextKey(None),
                Delete(u64v(3)),
                LookupAndDelete(u64v(2)),
                LookupAndDelete(u64v(2)),
                Delete(u64v(1)),
                NextKey(None),
                NextKey(Some(u64v(5))),
            ],
            true,
        );
    }
    compare(
        "hash full",
        spec(HASH, 4, 4, 2),
        &[Update(u32v(1), u32v(1), 0), Update(u32v(2), u32v(1), 0), Update(u32v(3), u32v(1), 0), Update(u32v(2), u32v(5), 0)],
        true,
    );
    let all = |b: u8| vec![b; 8 * ncpus];
    for t in [PERCPU_HASH, LRU_PERCPU_HASH] {
        compare("percpu hash", spec(t, 8, 8, 4), &[Update(u64v(1), all(3), 0), Lookup(u64v(1)), LookupAndDelete(u64v(1)), Lookup(u64v(1))], true);
    }
    compare(
        "percpu hash odd value",
        spec(PERCPU_HASH, 8, 4, 4),
        &[Update(u64v(1), all(3), 0), Lookup(u64v(1))],
        true,
    );
    compare(
        "array",
        spec(ARRAY, 4, 8, 4),
        &[
            Lookup(u32v(0)),
            Lookup(u32v(4)),
            Update(u32v(4), u64v(1), 0),
            Update(u32v(1), u64v(1), BPF_NOEXIST),
            Update(u32v(1), u64v(7), BPF_EXIST),
            Update(u32v(1), u64v(7), 3),
            Lookup(u32v(1)),
            Delete(u32v(1)),
            NextKey(None),
            NextKey(Some(u32v(2))),
            NextKey(Some(u32v(3))),
            NextKey(Some(u32v(9))),
            LookupAndDelete(u32v(1)),
        ],
        true,
    );
    compare("percpu array", spec(PERCPU_ARRAY, 4, 4, 2), &[Update(u32v(1), all(9), 0), Lookup(u32v(1)), Lookup(u32v(0))], true);
    for t in [QUEUE, STACK] {
        compare(
            "queue/stack",
            spec(t, 0, 4, 2),
            &[
                Lookup(vec![]),
                LookupAndDelete(vec![]),
                Update(vec![], u32v(1), 0),
                Update(vec![], u32v(2), 0),
                Update(vec![], u32v(3), 0),
                Update(vec![], u32v(3), BPF_EXIST),
                Update(vec![], u32v(3), BPF_NOEXIST),
                Lookup(vec![]),
                LookupAndDelete(vec![]),
                LookupAndDelete(vec![]),
                LookupAndDelete(vec![]),
                Delete(vec![]),
            ],
            true,
        );
    }
    compare(
        "bloom",
        MapSpec { map_type: BLOOM_FILTER, key_size: 0, value_size: 4, max_entries: 100, map_extra: 3, ..Default::default() },
        &[Lookup(vec![]), Update(vec![], u32v(5), 0), Update(vec![], u32v(5), BPF_EXIST), Delete(vec![])],
        false,
    );
    let lpm = |plen: u32, ip: [u8; 4]| {
        let mut k = plen.to_ne_bytes().to_vec();
        k.extend_from_slice(&ip);
        k
    };
    compare(
        "lpm",
        MapSpec { map_type: LPM_TRIE, key_size: 8, value_size: 4, max_entries: 2, map_flags: BPF_F_NO_PREALLOC, ..Default::default() },
        &[
            Update(lpm(8, [10, 0, 0, 0]), u32v(8), 0),
            Update(lpm(33, [10, 0, 0, 0]), u32v(8), 0),
            Update(lpm(8, [10, 0, 0, 0]), u32v(8), BPF_NOEXIST),
            Update(lpm(16, [10, 1, 0, 0]), u32v(16), 0),
            Update(lpm(24, [10, 1, 1, 0]), u32v(24), 0),
            Lookup(lpm(32, [10, 1, 2, 3])),
            Lookup(lpm(32, [11, 1, 2, 3])),
            Delete(lpm(24, [10, 1, 1, 0])),
            Delete(lpm(16, [10, 1, 0, 0])),
            Lookup(lpm(32, [10, 1, 2, 3])),
        ],
        true,
    );
    compare("stack trace", spec(STACK_TRACE, 4, 64, 16), &[Lookup(u32v(1)), Delete(u32v(1)), Update(u32v(1), vec![0; 64], 0), NextKey(None)], true);
    compare("prog array", spec(PROG_ARRAY, 4, 4, 4), &[Lookup(u32v(1)), Delete(u32v(1)), Delete(u32v(9))], true);
    compare(
        "perf event array",
        spec(PERF_EVENT_ARRAY, 4, 4, 4),
        &[Lookup(u32v(1)), Lookup(u32v(9)), Delete(u32v(1)), Delete(u32v(9)), NextKey(None), NextKey(Some(u32v(3)))],
        true,
    );
    compare("ringbuf", spec(RINGBUF, 0, 0, 4096), &[Lookup(vec![]), Delete(vec![]), NextKey(None)], false);
    // Creation errnos.
    for (name, s) in [
        ("hash key 0", spec(HASH, 0, 8, 4)),
        ("hash max 0", spec(HASH, 8, 8, 0)),
        ("array key 8", spec(ARRAY, 8, 8, 4)),
        ("queue key 4", spec(QUEUE, 4, 8, 4)),
        ("ringbuf 5000", spec(RINGBUF, 0, 0, 5000)),
        ("stack trace value 12", spec(STACK_TRACE, 4, 12, 4)),
        ("lpm without NO_PREALLOC", spec(LPM_TRIE, 8, 4, 4)),
        ("hash bad flags", MapSpec { map_flags: 1 << 20, ..spec(HASH, 8, 8, 4) }),
        ("lru no prealloc", MapSpec { map_flags: BPF_F_NO_PREALLOC, ..spec(LRU_HASH, 8, 8, 4) }),
    ] {
        compare(name, s, &[], false);
    }
}
