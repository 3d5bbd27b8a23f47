//! What libbpf 1.5 and bpftrace 0.20–0.27 ask of a current kernel, answered
//! by the server with that kernel's values and errnos (each errno was
//! checked against Linux 6.18 as root): BPF tokens refused the way a kernel
//! without a delegated bpffs refuses them, uprobe_multi links (feature
//! probes, bad input, cookies, the link's info, detach on close), BPF
//! ring buffers mapped and polled as libbpf's `ring_buffer__new` does, and
//! the listing by id bpftool does (`prog show`, `map show`, `prog dump`).
//!
//! One test function: the server's registry is process-wide, opened once
//! from `USERBPF_DIR`.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

const BPF_PROG_LOAD: i64 = 5;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_LINK_CREATE: i64 = 28;
const BPF_TOKEN_CREATE: i64 = 36;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;
const BPF_LINK_TYPE_UPROBE_MULTI: u32 = 12;
const RINGBUF: u32 = 27;

fn put32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// A kprobe-type program `r0 = 0; exit` with this expected attach type.
fn prog_load(expected_attach_type: u32) -> i32 {
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut a = [0u8; 128];
    put32(&mut a, 0, BPF_PROG_TYPE_KPROBE);
    put32(&mut a, 4, insns.len() as u32);
    put64(&mut a, 8, insns.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put32(&mut a, 68, expected_attach_type);
    bpf(BPF_PROG_LOAD, &mut a).expect("load a uprobe program") as i32
}

/// The arrays and scalars of one `link_create.uprobe_multi`.
struct Multi<'a> {
    path: &'a std::ffi::CStr,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    flags: u32,
    pid: u32,
}

fn uprobe_multi(prog: i32, m: &Multi<'_>) -> Result<i32, i32> {
    let mut a = [0u8; 128];
    put32(&mut a, 0, prog as u32);
    put32(&mut a, 8, BPF_TRACE_UPROBE_MULTI);
    put64(&mut a, 16, m.path.as_ptr() as u64);
    put64(&mut a, 24, m.offsets);
    put64(&mut a, 32, m.ref_ctr_offsets);
    put64(&mut a, 40, m.cookies);
    put32(&mut a, 48, m.cnt);
    put32(&mut a, 52, m.flags);
    put32(&mut a, 56, m.pid);
    bpf(BPF_LINK_CREATE, &mut a).map(|fd| fd as i32)
}

fn close(fd: i32) {
    // SAFETY: closing a descriptor this test owns, through the server.
    unsafe { interpose::close(fd) };
}

/// `bpf_link_info` of a uprobe_multi link, its arrays filled into these buffers.
fn link_info(fd: i32, path: &mut [u8], offsets: &mut [u64], cookies: &mut [u64]) -> Result<[u8; 64], i32> {
    let mut info = [0u8; 64];
    info[16..24].copy_from_slice(&(path.as_mut_ptr() as u64).to_ne_bytes());
    info[24..32].copy_from_slice(&(offsets.as_mut_ptr() as u64).to_ne_bytes());
    info[40..48].copy_from_slice(&(cookies.as_mut_ptr() as u64).to_ne_bytes());
    info[48..52].copy_from_slice(&(path.len() as u32).to_ne_bytes());
    info[52..56].copy_from_slice(&(offsets.len().min(cookies.len()) as u32).to_ne_bytes());
    obj_info(fd, &mut info).map(|_| info)
}

/// `BPF_OBJ_GET_INFO_BY_FD` of `fd` into `info` (its length is `info_len`).
fn obj_info(fd: i32, info: &mut [u8]) -> Result<i64, i32> {
    let mut a = [0u8; 128];
    put32(&mut a, 0, fd as u32);
    put32(&mut a, 4, info.len() as u32);
    put64(&mut a, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

fn mmap_ring(fd: i32, len: usize, prot: i32, flags: i32, off: i64) -> Result<*mut u8, i32> {
    // SAFETY: a fresh mapping of our own fd, through the server.
    let p = unsafe { interpose::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(p as *mut u8)
    }
}

fn epoll_ready(epfd: i32) -> Vec<u64> {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
    // SAFETY: `events` has room for 4 entries.
    let n = unsafe { interpose::epoll_wait(epfd, events.as_mut_ptr(), 4, 0) };
    assert!(n >= 0, "epoll_wait: {}", std::io::Error::last_os_error());
    events[..n as usize].iter().map(|e| e.u64).collect()
}

#[test]
fn modern_loader_abi() {
    let dir = scratch_registry("modern-abi");

    // BPF tokens: refused as by a kernel whose bpffs has no delegation, so
    // libbpf carries on without one.
    let mut a = [0u8; 128];
    assert_eq!(bpf(BPF_TOKEN_CREATE, &mut a), Err(libc::EINVAL));

    // uprobe_multi: the feature probes and bad input, in the kernel's order.
    let prog = prog_load(BPF_TRACE_UPROBE_MULTI);
    let exe = std::env::current_exe().expect("test binary");
    let exe_c = std::ffi::CString::new(exe.as_os_str().as_encoded_bytes()).unwrap();
    let offsets: [u64; 3] = [0x1000, 0x1010, 0x1020];
    let cookies: [u64; 3] = [7, 8, 9];
    let good = Multi {
        path: &exe_c,
        offsets: offsets.as_ptr() as u64,
        ref_ctr_offsets: 0,
        cookies: cookies.as_ptr() as u64,
        cnt: 3,
        flags: BPF_F_UPROBE_MULTI_RETURN,
        pid: 0,
    };
    let probe = Multi { path: c"/", cnt: 1, cookies: 0, flags: 0, ..good };
    assert_eq!(uprobe_multi(prog, &probe), Err(libc::EBADF), "libbpf's probe: \"/\" is not a file");
    assert_eq!(
        uprobe_multi(prog, &Multi { pid: u32::MAX, ..probe }),
        Err(libc::EINVAL),
        "libbpf's probe of fixed pid filtering: pid -1"
    );
    assert_eq!(uprobe_multi(prog, &Multi { cnt: 0, ..good }), Err(libc::EINVAL), "no offsets");
    assert_eq!(uprobe_multi(prog, &Multi { offsets: 0, ..good }), Err(libc::EINVAL), "null offsets");
    assert_eq!(uprobe_multi(prog, &Multi { flags: 2, ..good }), Err(libc::EINVAL), "unknown flag");
    assert_eq!(uprobe_multi(prog, &Multi { cnt: (1 << 20) + 1, ..good }), Err(libc::E2BIG));
    assert_eq!(
        uprobe_multi(prog, &Multi { path: c"/nonexistent/userbpf", ..good }),
        Err(libc::ENOENT)
    );
    assert_eq!(uprobe_multi(prog, &Multi { offsets: 8, ..good }), Err(libc::EFAULT), "bad offsets pointer");
    assert_eq!(uprobe_multi(prog, &Multi { cookies: 8, ..good }), Err(libc::EFAULT), "bad cookies pointer");
    // A count larger than the arrays reads past them: EFAULT where that
    // memory is unmapped (the page after a page-aligned array).
    let page = mmap_anon(2);
    // SAFETY: unmapping the second page of our own mapping.
    unsafe { libc::munmap(page.add(PAGE).cast(), PAGE) };
    let tail = page as u64 + (PAGE - 16) as u64;
    assert_eq!(
        uprobe_multi(prog, &Multi { offsets: tail, cookies: 0, ..good }),
        Err(libc::EFAULT),
        "cnt 3 with 2 offsets before unmapped memory"
    );
    let negative: [u64; 3] = [0x1000, u64::MAX, 0x1020];
    assert_eq!(uprobe_multi(prog, &Multi { offsets: negative.as_ptr() as u64, ..good }), Err(libc::EINVAL));
    let plain = prog_load(0);
    assert_eq!(uprobe_multi(plain, &good), Err(libc::EINVAL), "program not loaded for uprobe_multi");

    // A good link: one enabled uretprobe per offset, each with its cookie,
    // on the file's inode.
    let reg = shm_maps::Registry::open(&dir).expect("registry");
    let before = reg.links().len();
    let link = uprobe_multi(prog, &good).expect("uprobe_multi link");
    let links = reg.links();
    assert_eq!(links.len(), before + 3);
    let ino = std::fs::metadata(&exe).unwrap().ino();
    let mut got: Vec<(u64, u64)> = links
        .iter()
        .filter(|l| l.inode == ino)
        .map(|l| {
            assert_eq!(l.kind, shm_maps::LinkKind::Uretprobe);
            assert!(l.enabled);
            assert_eq!(l.pid, -1, "pid 0: every process");
            (l.file_offset, l.cookie)
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![(0x1000, 7), (0x1010, 8), (0x1020, 9)]);

    // Its info, as bpftool reads it; too small a count is ENOSPC.
    let mut path = [0u8; 4096];
    let (mut offs, mut cks) = ([0u64; 3], [0u64; 3]);
    let info = link_info(link, &mut path, &mut offs, &mut cks).expect("link info");
    assert_eq!(u32_at(&info, 0), BPF_LINK_TYPE_UPROBE_MULTI);
    assert_ne!(u32_at(&info, 4), 0, "a link id");
    assert_eq!(u32_at(&info, 52), 3, "count");
    assert_eq!(u32_at(&info, 56), BPF_F_UPROBE_MULTI_RETURN, "flags");
    assert_eq!(offs, offsets);
    assert_eq!(cks, cookies);
    let len = path.iter().position(|&b| b == 0).unwrap();
    assert_eq!(&path[..len], exe_c.as_bytes());
    assert_eq!(u32_at(&info, 48) as usize, len + 1, "path_size");
    let (mut small_offs, mut small_cks) = ([0u64; 2], [0u64; 2]);
    assert_eq!(link_info(link, &mut path, &mut small_offs, &mut small_cks).err(), Some(libc::ENOSPC));

    // The kernel's perf-event and uprobe_multi links have no detach or
    // update operation (checked on 6.18 as root): EOPNOTSUPP and EINVAL;
    // a program fd is not a link (EINVAL).
    let mut a = [0u8; 128];
    put32(&mut a, 0, link as u32);
    assert_eq!(bpf(34 /* BPF_LINK_DETACH */, &mut a), Err(libc::EOPNOTSUPP));
    put32(&mut a, 4, prog as u32);
    assert_eq!(bpf(29 /* BPF_LINK_UPDATE */, &mut a), Err(libc::EINVAL));
    let mut a = [0u8; 128];
    put32(&mut a, 0, prog as u32);
    assert_eq!(bpf(34, &mut a), Err(libc::EINVAL), "not a link");
    assert_eq!(reg.links().len(), before + 3, "the link still holds its probes");

    // bpftool link show: each registry probe is listed as the kernel's
    // perf-event link on a uretprobe, with its file, offset and cookie; the
    // multi link's id is its first probe's.
    let link_ids: Vec<u32> = {
        let mut ids = Vec::new();
        let mut at = 0;
        while let Ok(next) = next_id(BPF_LINK_GET_NEXT_ID, at) {
            ids.push(next);
            at = next;
        }
        ids
    };
    let mine: Vec<u32> = links.iter().filter(|l| l.inode == ino).map(|l| l.id).collect();
    assert!(mine.iter().all(|id| link_ids.contains(id)), "{mine:?} not all in {link_ids:?}");
    assert!(mine.contains(&u32_at(&info, 4)), "the multi link's id is one of its probes'");
    let by_id = fd_by_id(BPF_LINK_GET_FD_BY_ID, mine[0]).expect("link fd by id");
    let mut name = [0u8; 4096];
    let mut info = [0u8; 48];
    info[24..32].copy_from_slice(&(name.as_mut_ptr() as u64).to_ne_bytes());
    info[32..36].copy_from_slice(&(name.len() as u32).to_ne_bytes());
    obj_info(by_id, &mut info).expect("link info by id");
    let record = links.iter().find(|l| l.id == mine[0]).unwrap();
    assert_eq!(u32_at(&info, 0), 7, "BPF_LINK_TYPE_PERF_EVENT");
    assert_eq!((u32_at(&info, 4), u32_at(&info, 8)), (mine[0], u32_at(&mine_prog_info(prog), 4)));
    assert_eq!(u32_at(&info, 16), 2, "BPF_PERF_EVENT_URETPROBE");
    assert_eq!(u32_at(&info, 36) as u64, record.file_offset);
    assert_eq!(u64::from_ne_bytes(info[40..48].try_into().unwrap()), record.cookie);
    assert_eq!(&name[..exe_c.as_bytes().len() + 1], exe_c.as_bytes_with_nul());
    close(by_id);

    // Closing the link detaches every probe.
    close(link);
    assert_eq!(reg.links().len(), before, "close(link) removes its probes");
    close(plain);
    close(prog);

    // Ring buffers: libbpf's two mappings, and the kernel's refusals.
    let rb = map_create(RINGBUF, 0, 0, 8192, 0).expect("create ringbuf");
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let shared = libc::MAP_SHARED;
    assert_eq!(mmap_ring(rb, PAGE, rw, libc::MAP_PRIVATE, 0).err(), Some(libc::EINVAL), "private");
    assert_eq!(mmap_ring(rb, PAGE, rw, shared, PAGE as i64).err(), Some(libc::EPERM), "writable producer page");
    assert_eq!(
        mmap_ring(rb, PAGE + 2 * 8192, rw, shared, PAGE as i64).err(),
        Some(libc::EPERM),
        "writable data"
    );
    assert_eq!(
        mmap_ring(rb, 2 * PAGE + 2 * 8192, libc::PROT_READ, shared, PAGE as i64).err(),
        Some(libc::EINVAL),
        "past the end of the layout"
    );
    let consumer = mmap_ring(rb, PAGE, rw, shared, 0).expect("consumer page");
    let producer = mmap_ring(rb, PAGE + 2 * 8192, libc::PROT_READ, shared, PAGE as i64).expect("producer + data");

    // epoll: ready exactly while records are unread, as ringbuf_map_poll_kern.
    // SAFETY: plain epoll_create1.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0x5eed };
    // SAFETY: registering our ring fd with a valid event.
    assert_eq!(unsafe { interpose::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, rb, &mut ev) }, 0);
    assert_eq!(epoll_ready(epfd), Vec::<u64>::new(), "empty ring");
    let mut info = [0u8; 88];
    obj_info(rb, &mut info).expect("map info");
    assert_eq!(u32_at(&info, 0), RINGBUF);
    assert_eq!(u32_at(&info, 16), 8192, "max_entries, which libbpf maps twice");
    produce_one_record(rb);
    assert_eq!(epoll_ready(epfd), vec![0x5eed], "a record to read");
    // SAFETY: the mappings made above: consumer_pos at 0 of the consumer
    // page, producer_pos at 0 of the producer page, then the data.
    unsafe {
        let prod_pos = *(producer as *const u64);
        assert_eq!(prod_pos, 24, "one 8-byte header + 16 bytes");
        assert_eq!(*(producer.add(PAGE) as *const u32), 16, "record length, busy bit clear");
        assert_eq!(std::slice::from_raw_parts(producer.add(PAGE + 8), 16), b"sixteen bytes!!\0");
        assert_eq!(std::ptr::read_volatile(producer.add(PAGE + 24)), 0, "nothing beyond");
        *(consumer as *mut u64) = prod_pos; // consumed, as ring_buffer__consume does
    }
    assert_eq!(epoll_ready(epfd), Vec::<u64>::new(), "all consumed");
    // SAFETY: unmapping our own mappings, closing our own fds.
    unsafe {
        libc::munmap(consumer.cast(), PAGE);
        libc::munmap(producer.cast(), PAGE + 2 * 8192);
        libc::close(epfd);
    }
    close(rb);

    listing_by_id(&reg);
    btf_objects();
    btf_func_and_line_info();
    bad_pointers();
    let _ = std::fs::remove_dir_all(&dir);
}

const BPF_LINK_GET_NEXT_ID: i64 = 31;
const BPF_LINK_GET_FD_BY_ID: i64 = 30;

/// The first 232 bytes of `bpf_prog_info` of `fd`.
fn mine_prog_info(fd: i32) -> [u8; 232] {
    let mut info = [0u8; 232];
    obj_info(fd, &mut info).expect("prog info");
    info
}

const BPF_PROG_GET_NEXT_ID: i64 = 11;
const BPF_MAP_GET_NEXT_ID: i64 = 12;
const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_MAP_GET_FD_BY_ID: i64 = 14;

/// `*_GET_NEXT_ID` from `start`: the next id, or the errno.
fn next_id(cmd: i64, start: u32) -> Result<u32, i32> {
    let mut a = [0u8; 128];
    put32(&mut a, 0, start);
    bpf(cmd, &mut a).map(|_| u32_at(&a, 4))
}

fn fd_by_id(cmd: i64, id: u32) -> Result<i32, i32> {
    let mut a = [0u8; 128];
    put32(&mut a, 0, id);
    bpf(cmd, &mut a).map(|fd| fd as i32)
}

/// `bpf_prog_info` of `fd`, with room for `insns` xlated bytes and 4 map ids.
fn prog_info(fd: i32, xlated: &mut [u8], map_ids: &mut [u32; 4]) -> [u8; 232] {
    let mut info = [0u8; 232];
    info[20..24].copy_from_slice(&(xlated.len() as u32).to_ne_bytes());
    info[32..40].copy_from_slice(&(xlated.as_mut_ptr() as u64).to_ne_bytes());
    info[52..56].copy_from_slice(&4u32.to_ne_bytes());
    info[56..64].copy_from_slice(&(map_ids.as_mut_ptr() as u64).to_ne_bytes());
    obj_info(fd, &mut info).expect("prog info");
    info
}

/// bpftool's `prog show`/`map show`/`prog dump xlated`: ids from the
/// registry, fds by id (for another loader's objects too), info with the
/// kernel's tag and the program's instructions.
fn listing_by_id(reg: &shm_maps::Registry) {
    let prog = prog_load(0);
    let mut mine = [0u8; 232];
    obj_info(prog, &mut mine).expect("info");
    let id = u32_at(&mine, 4);
    // Linux 6.18, as root, gives `r0 = 0; exit` this tag (SHA-256 based).
    assert_eq!(mine[8..16], [0x59, 0xf4, 0xa9, 0x31, 0x74, 0x4d, 0xcd, 0xc6], "the kernel's tag");
    assert_eq!(u32_at(&mine, 20), 16, "xlated_prog_len");
    assert_eq!(u32_at(&mine, 84) & 1, 1, "gpl_compatible");

    // Iteration visits the program; past the last id: ENOENT.
    let mut ids = Vec::new();
    let mut at = 0;
    while let Ok(next) = next_id(BPF_PROG_GET_NEXT_ID, at) {
        ids.push(next);
        at = next;
    }
    assert!(ids.contains(&id), "{ids:?} lacks {id}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending: {ids:?}");
    assert_eq!(next_id(BPF_PROG_GET_NEXT_ID, u32::MAX - 1), Err(libc::ENOENT));
    assert_eq!(fd_by_id(BPF_PROG_GET_FD_BY_ID, u32::MAX - 1), Err(libc::ENOENT));

    // By id: the same program, its instructions dumped.
    let again = fd_by_id(BPF_PROG_GET_FD_BY_ID, id).expect("fd by id");
    let mut xlated = [0u8; 16];
    let mut map_ids = [0u32; 4];
    let info = prog_info(again, &mut xlated, &mut map_ids);
    assert_eq!(u32_at(&info, 4), id);
    assert_eq!(info[8..16], mine[8..16]);
    assert_eq!(xlated, [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(u32_at(&info, 52), 0, "no maps");
    close(again);
    close(prog);

    // Another loader's map: listed, opened by id, described, and closing
    // that fd leaves it alone.
    let foreign = reg
        .create_map(&shm_maps::MapSpec {
            map_type: 1,
            key_size: 8,
            value_size: 16,
            max_entries: 32,
            name: "theirs".into(),
            ..Default::default()
        })
        .expect("a map of another loader");
    let mut at = 0;
    let mut found = false;
    while let Ok(next) = next_id(BPF_MAP_GET_NEXT_ID, at) {
        found |= next == foreign.id();
        at = next;
    }
    assert!(found, "map {} not listed", foreign.id());
    let fd = fd_by_id(BPF_MAP_GET_FD_BY_ID, foreign.id()).expect("map fd by id");
    let mut info = [0u8; 88];
    obj_info(fd, &mut info).expect("map info by id");
    assert_eq!((u32_at(&info, 0), u32_at(&info, 4)), (1, foreign.id()));
    assert_eq!((u32_at(&info, 8), u32_at(&info, 12), u32_at(&info, 16)), (8, 16, 32));
    assert_eq!(&info[24..31], b"theirs\0");
    close(fd);
    assert!(reg.map_info(foreign.id()).is_ok(), "closing a by-id fd removed the map");
}

/// A program writes one 16-byte record into ring buffer `rb` (a
/// raw_tracepoint program test-run by the loader, as BEGIN probes are).
fn produce_one_record(rb: i32) {
    let text = format!(
        "
        lddw %r1, 0x2121217365747962
        stxdw [%r10-8], %r1
        lddw %r1, 0x206e656574786973
        stxdw [%r10-16], %r1
        mov %r1, 0
        stxb [%r10-1], %r1
        lddw %r1, map_fd({rb})
        mov %r2, %r10
        add %r2, -16
        mov %r3, 16
        mov %r4, 0
        call bpf_ringbuf_output
        exit
        "
    );
    let insns: Vec<u64> = vm::asm::assemble(&text).unwrap().iter().map(|i| i.to_u64()).collect();
    let license = c"GPL";
    let mut a = [0u8; 128];
    put32(&mut a, 0, 17); // BPF_PROG_TYPE_RAW_TRACEPOINT
    put32(&mut a, 4, insns.len() as u32);
    put64(&mut a, 8, insns.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    let prog = bpf(BPF_PROG_LOAD, &mut a).expect("load the producer") as i32;
    let mut a = [0u8; 128];
    put32(&mut a, 0, prog as u32);
    bpf(10 /* BPF_PROG_TEST_RUN */, &mut a).expect("run the producer");
    assert_eq!(u32_at(&a, 4), 0, "bpf_ringbuf_output returned 0");
    close(prog);
}

fn mmap_anon(pages: usize) -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p as *mut u8
}

const BPF_BTF_LOAD: i64 = 18;

/// `BPF_BTF_LOAD(blob)`: the fd or the errno.
fn btf_load(blob: &[u8]) -> Result<i32, i32> {
    let mut a = [0u8; 128];
    put64(&mut a, 0, blob.as_ptr() as u64);
    put32(&mut a, 16, blob.len() as u32);
    bpf(BPF_BTF_LOAD, &mut a).map(|fd| fd as i32)
}

/// libbpf probes BTF support by loading small blobs, then uploads its
/// object's BTF: a sound blob is kept (its info gives it back), a broken
/// header is refused as by the kernel's btf_parse_hdr.
fn btf_objects() {
    // One `int` (BTF_KIND_INT, 4 bytes, 32 bits), strings "\0int\0".
    let mut blob = Vec::new();
    blob.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    blob.extend_from_slice(&[1, 0]);
    for v in [24u32, 0, 16, 16, 5] {
        blob.extend_from_slice(&v.to_ne_bytes());
    }
    for v in [1u32, 1 << 24, 4, 32] {
        blob.extend_from_slice(&v.to_ne_bytes());
    }
    blob.extend_from_slice(b"\0int\0");
    let fd = btf_load(&blob).expect("a sound BTF blob");
    let mut copy = vec![0u8; blob.len()];
    let mut info = [0u8; 32];
    info[0..8].copy_from_slice(&(copy.as_mut_ptr() as u64).to_ne_bytes());
    info[8..12].copy_from_slice(&(copy.len() as u32).to_ne_bytes());
    obj_info(fd, &mut info).expect("BTF info");
    assert_eq!(u32_at(&info, 8) as usize, blob.len(), "btf_size");
    assert_ne!(u32_at(&info, 12), 0, "an id");
    assert_eq!(copy, blob, "the blob comes back");
    assert_eq!(u32_at(&info, 28), 0, "not kernel BTF");
    close(fd);

    let mut bad_magic = blob.clone();
    bad_magic[0] ^= 0xff;
    assert_eq!(btf_load(&bad_magic), Err(libc::EINVAL), "magic");
    let mut bad_version = blob.clone();
    bad_version[2] = 2;
    assert_eq!(btf_load(&bad_version), Err(libc::EINVAL), "version");
    let mut past_end = blob.clone();
    past_end[20..24].copy_from_slice(&100u32.to_ne_bytes());
    assert_eq!(btf_load(&past_end), Err(libc::EINVAL), "strings past the end");
    assert_eq!(btf_load(&blob[..10]), Err(libc::EINVAL), "truncated header");
    assert_eq!(btf_load(&[]), Err(libc::EINVAL), "empty");
}

/// A program's `func_info` and `line_info` (libbpf passes them with its
/// object's BTF): checked as the kernel's check_btf_info, with its errnos
/// and log, and given back by `OBJ_GET_INFO_BY_FD`. Every expectation here
/// was read off Linux 6.18 as root with the same blob, program and records.
fn btf_func_and_line_info() {
    // [1] int, [2] FUNC_PROTO returning int, [3] FUNC "main" (global);
    // strings "\0int\0main\0a.c\0r0\0".
    let strs = b"\0int\0main\0a.c\0r0\0";
    let mut blob = Vec::new();
    blob.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    blob.extend_from_slice(&[1, 0]);
    for v in [24u32, 0, 40, 40, strs.len() as u32, 1, 1 << 24, 4, 32, 0, 13 << 24, 1, 5, (12 << 24) | 1, 2] {
        blob.extend_from_slice(&v.to_ne_bytes());
    }
    blob.extend_from_slice(strs);
    let btf = btf_load(&blob).expect("a BTF blob with a FUNC");
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    // (insn_off, type_id) and (insn_off, file_name_off, line_off, line_col).
    let func_info = |first: u32| [first, 3, 1, 3];
    let line_info = |second: u32| [0u32, 10, 14, (1 << 10) | 1, second, 10, 14, (2 << 10) | 1];
    let load = |btf_fd: u32, (frec, fcnt, first): (u32, u32, u32), (lrec, lcnt, second): (u32, u32, u32)| {
        let (fi, li) = (func_info(first), line_info(second));
        let mut log = vec![0u8; 4096];
        let mut a = [0u8; 128];
        put32(&mut a, 0, BPF_PROG_TYPE_KPROBE);
        put32(&mut a, 4, insns.len() as u32);
        put64(&mut a, 8, insns.as_ptr() as u64);
        put64(&mut a, 16, license.as_ptr() as u64);
        put32(&mut a, 24, 1);
        put32(&mut a, 28, log.len() as u32);
        put64(&mut a, 32, log.as_mut_ptr() as u64);
        put32(&mut a, 72, btf_fd);
        put32(&mut a, 76, frec);
        put64(&mut a, 80, fi.as_ptr() as u64);
        put32(&mut a, 88, fcnt);
        put32(&mut a, 92, lrec);
        put64(&mut a, 96, li.as_ptr() as u64);
        put32(&mut a, 104, lcnt);
        let r = bpf(BPF_PROG_LOAD, &mut a).map(|fd| fd as i32);
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        (r, String::from_utf8_lossy(&log[..end]).into_owned())
    };
    let nothing = "processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";
    let btf_fd = btf as u32;
    let refused = |r: (Result<i32, i32>, String), errno: i32, message: &str| {
        assert_eq!(r.0, Err(errno), "{message:?}: {}", r.1);
        assert_eq!(r.1, format!("{message}{nothing}"));
    };
    refused(load(btf_fd, (4, 1, 0), (16, 2, 1)), libc::EINVAL, "invalid func info rec size 4\n");
    refused(load(btf_fd, (8, 1, 1), (16, 2, 1)), libc::EINVAL, "nonzero insn_off 1 for the first func info record");
    refused(load(btf_fd, (8, 2, 0), (16, 2, 1)), libc::EINVAL, "number of funcs in func_info doesn't match number of subprogs\n");
    refused(load(btf_fd, (8, 1, 0), (8, 2, 1)), libc::EINVAL, "");
    refused(load(btf_fd, (8, 1, 0), (16, 2, 5)), libc::EINVAL, "Invalid line_info[1].insn_off:5 (prev_offset:0 prog->len:2)\n");
    refused(load(9999, (8, 1, 0), (16, 2, 1)), libc::EBADF, "");
    refused(load(0, (8, 1, 0), (16, 2, 1)), libc::EINVAL, "");

    let (prog, log) = load(btf_fd, (8, 1, 0), (16, 2, 1));
    let prog = prog.unwrap_or_else(|e| panic!("a sound load: errno {e}\n{log}"));
    let mut info = [0u8; 232];
    obj_info(prog, &mut info).expect("prog info");
    let mut btf_info = [0u8; 32];
    obj_info(btf, &mut btf_info).expect("BTF info");
    assert_eq!(u32_at(&info, 128), u32_at(&btf_info, 12), "btf_id is the BTF object's id");
    assert_eq!((u32_at(&info, 144), u32_at(&info, 132)), (1, 8), "nr_func_info, func_info_rec_size");
    assert_eq!((u32_at(&info, 148), u32_at(&info, 172)), (2, 16), "nr_line_info, line_info_rec_size");
    assert_eq!(u32_at(&info, 176), 8, "jited_line_info_rec_size");
    let mut funcs = [0u32; 2];
    let mut lines = [0u32; 8];
    let mut ask = [0u8; 232];
    ask[132..136].copy_from_slice(&8u32.to_ne_bytes());
    ask[136..144].copy_from_slice(&(funcs.as_mut_ptr() as u64).to_ne_bytes());
    ask[144..148].copy_from_slice(&1u32.to_ne_bytes());
    ask[148..152].copy_from_slice(&2u32.to_ne_bytes());
    ask[152..160].copy_from_slice(&(lines.as_mut_ptr() as u64).to_ne_bytes());
    ask[172..176].copy_from_slice(&16u32.to_ne_bytes());
    obj_info(prog, &mut ask).expect("prog info with records");
    assert_eq!(funcs, [0, 3], "the func_info record");
    assert_eq!(lines, line_info(1), "the line_info records");
    let mut wrong = [0u8; 232];
    wrong[132..136].copy_from_slice(&4u32.to_ne_bytes());
    wrong[144..148].copy_from_slice(&1u32.to_ne_bytes());
    assert_eq!(obj_info(prog, &mut wrong), Err(libc::EINVAL), "a record size that is not the kernel's");
    close(prog);
    close(btf);
}

/// Pointers a loader got wrong get EFAULT, as from the kernel, and the
/// loader lives on: the attr itself, key and value buffers, instructions,
/// the license, a uprobe path, a perf_event_attr.
fn bad_pointers() {
    // Below vm.mmap_min_addr: never mapped.
    let bad = 0x1000u64;
    let call = |cmd: i64, attr: u64, size: i64| {
        // SAFETY: the server checks the attr pointer.
        let r = unsafe { interpose::syscall(libc::SYS_bpf, cmd, attr as i64, size, 0, 0, 0) };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(r)
        }
    };
    assert_eq!(call(BPF_MAP_CREATE, bad, 80), Err(libc::EFAULT), "attr");
    assert_eq!(call(BPF_PROG_LOAD, bad, 128), Err(libc::EFAULT), "attr");

    let array = map_create(ARRAY, 4, 8, 4, 0).expect("array");
    let mut a = [0u8; 128];
    put32(&mut a, 0, array as u32);
    put64(&mut a, 8, bad);
    put64(&mut a, 16, mmap_anon(1) as u64);
    assert_eq!(bpf(BPF_MAP_LOOKUP_ELEM, &mut a), Err(libc::EFAULT), "key");
    let key = 0u32;
    put64(&mut a, 8, &key as *const u32 as u64);
    put64(&mut a, 16, bad);
    assert_eq!(bpf(BPF_MAP_LOOKUP_ELEM, &mut a), Err(libc::EFAULT), "value written back");
    assert_eq!(bpf(BPF_MAP_UPDATE_ELEM, &mut a), Err(libc::EFAULT), "value read");
    close(array);

    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let mut a = [0u8; 128];
    put32(&mut a, 0, BPF_PROG_TYPE_KPROBE);
    put32(&mut a, 4, 2);
    put64(&mut a, 8, bad);
    put64(&mut a, 16, c"GPL".as_ptr() as u64);
    assert_eq!(bpf(BPF_PROG_LOAD, &mut a), Err(libc::EFAULT), "instructions");
    put64(&mut a, 8, insns.as_ptr() as u64);
    put64(&mut a, 16, bad);
    assert_eq!(bpf(BPF_PROG_LOAD, &mut a), Err(libc::EFAULT), "license");

    // A perf_event_attr, and a uprobe whose path (config1) is bad.
    // SAFETY: the server checks the pointers.
    let perf = |attr: u64| unsafe { interpose::syscall(libc::SYS_perf_event_open, attr as i64, -1, 0, -1, 0, 0) };
    assert_eq!(perf(bad), -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EFAULT), "perf_event_attr");
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&0x7562u32.to_ne_bytes()); // the server's uprobe PMU type
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[56..64].copy_from_slice(&bad.to_ne_bytes());
    assert_eq!(perf(attr.as_ptr() as u64), -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EFAULT), "uprobe path");
}
