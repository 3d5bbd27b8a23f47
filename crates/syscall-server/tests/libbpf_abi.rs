//! The kernel behaviours libbpf 1.x relies on at load, checked through the
//! server's exported `syscall`/`mmap`/`close` (called directly: they are the
//! functions a preloaded loader's libc calls resolve to): `.rodata`-style maps (frozen: EPERM on writes,
//! EPERM on a second freeze, no writable mapping), `mmap` of an mmapable
//! array showing its values at offset 0, `CGROUP_ARRAY`, and perf rings
//! mapped with libbpf's page count.
//!
//! One test function: the server's registry is process-wide, opened once
//! from `USERBPF_DIR`.

mod common;

use common::*;

#[test]
fn libbpf_load_time_abi() {
    let dir = scratch_registry("libbpf-abi");

    // .rodata: created read-only for programs and mmapable, filled, frozen.
    let rodata =
        map_create(ARRAY, 4, 16, 1, BPF_F_RDONLY_PROG | BPF_F_MMAPABLE).expect("create .rodata");
    let mut value = *b"const volatile\0\0";
    elem(BPF_MAP_UPDATE_ELEM, rodata, 0, &mut value).expect("fill .rodata");
    let link = std::fs::read_link(format!("/proc/self/fd/{rodata}")).expect("readlink");
    assert!(
        link.starts_with(&dir),
        "the map is a registry file, not a kernel map: {}",
        link.display()
    );
    assert_eq!(freeze(rodata), Ok(0));
    assert_eq!(
        freeze(rodata),
        Err(libc::EPERM),
        "a second freeze (the kernel's answer)"
    );
    assert_eq!(
        elem(BPF_MAP_UPDATE_ELEM, rodata, 0, &mut [0u8; 16]),
        Err(libc::EPERM),
        "update after freeze"
    );
    let mut read = [0u8; 16];
    elem(BPF_MAP_LOOKUP_ELEM, rodata, 0, &mut read).expect("lookup after freeze");
    assert_eq!(read, value);
    assert_eq!(
        map_shared(rodata, PAGE, libc::PROT_READ | libc::PROT_WRITE).err(),
        Some(libc::EPERM),
        "writable mapping of a frozen map"
    );
    let p = map_shared(rodata, PAGE, libc::PROT_READ).expect("read-only mapping");
    // SAFETY: p maps at least 16 readable bytes.
    assert_eq!(
        unsafe { std::slice::from_raw_parts(p, 16) },
        &value,
        "values at offset 0"
    );
    unmap(p, PAGE);

    // .bss: the loader writes through its mapping, the syscall sees it.
    let bss = map_create(ARRAY, 4, 8, 1, BPF_F_MMAPABLE).expect("create .bss");
    let p = map_shared(bss, PAGE, libc::PROT_READ | libc::PROT_WRITE).expect("writable mapping");
    // SAFETY: p maps at least 8 writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(42u64.to_ne_bytes().as_ptr(), p, 8) };
    let mut read = [0u8; 8];
    elem(BPF_MAP_LOOKUP_ELEM, bss, 0, &mut read).expect("lookup .bss");
    assert_eq!(u64::from_ne_bytes(read), 42);
    unmap(p, PAGE);

    // Only mmapable arrays can be mapped, as in the kernel.
    let plain = map_create(ARRAY, 4, 8, 1, 0).expect("create array");
    assert_eq!(
        map_shared(plain, PAGE, libc::PROT_READ).err(),
        Some(libc::EINVAL)
    );
    let hash = map_create(1, 4, 8, 4, 0).expect("create hash");
    assert_eq!(
        map_shared(hash, PAGE, libc::PROT_READ).err(),
        Some(libc::ENODEV)
    );

    // CGROUP_ARRAY: created (libbpf-tools always create it), never usable.
    assert_eq!(
        map_create(CGROUP_ARRAY, 4, 8, 1, 0).err(),
        Some(libc::EINVAL),
        "value must be a u32 fd"
    );
    const ENOTSUPP: i32 = 524; // the kernel's answer, measured
    let cgroups = map_create(CGROUP_ARRAY, 4, 4, 1, 0).expect("create cgroup array");
    assert_eq!(
        elem(BPF_MAP_LOOKUP_ELEM, cgroups, 0, &mut [0u8; 4]),
        Err(ENOTSUPP)
    );
    let cg = std::fs::File::open("/").expect("open a directory");
    let mut cg_fd = (std::os::fd::AsRawFd::as_raw_fd(&cg) as u32).to_ne_bytes();
    assert_eq!(
        elem(BPF_MAP_UPDATE_ELEM, cgroups, 0, &mut cg_fd),
        Err(libc::EOPNOTSUPP)
    );

    // A BPF_OUTPUT perf ring mapped with libbpf's page count (8 data pages).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&10u64.to_ne_bytes()); // PERF_COUNT_SW_BPF_OUTPUT
                                                       // SAFETY: a perf_event_attr of 128 bytes.
    let ring =
        unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), -1, 0, -1, 0) } as i32;
    assert!(
        ring >= 0,
        "perf_event_open: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(
        map_shared(ring, 4 * PAGE, libc::PROT_READ).err(),
        Some(libc::EINVAL),
        "3 data pages: not a power of two"
    );
    let len = 9 * PAGE;
    let p = map_shared(ring, len, libc::PROT_READ | libc::PROT_WRITE).expect("map 1 + 8 pages");
    // SAFETY: the header page is mapped; data_offset/data_size of
    // perf_event_mmap_page are at 1040/1048.
    let (data_offset, data_size) =
        unsafe { (*(p.add(1040) as *const u64), *(p.add(1048) as *const u64)) };
    assert_eq!(
        (data_offset, data_size),
        (PAGE as u64, 8 * PAGE as u64),
        "the ring was resized to 8 data pages"
    );
    unmap(p, len);
    // Once programs can write into it (stored in a perf event array), the
    // ring keeps its size.
    let events = map_create(4, 4, 4, 1, 0).expect("create perf event array");
    let mut ring_fd = (ring as u32).to_ne_bytes();
    elem(BPF_MAP_UPDATE_ELEM, events, 0, &mut ring_fd).expect("store the ring");
    assert_eq!(
        map_shared(ring, 17 * PAGE, libc::PROT_READ).err(),
        Some(libc::EINVAL),
        "resize after publication"
    );
    let p = map_shared(ring, len, libc::PROT_READ).expect("the same size again");
    unmap(p, len);

    for fd in [rodata, bss, plain, hash, cgroups, ring, events] {
        // SAFETY: our fds.
        unsafe { interpose::close(fd) };
    }
    let _ = std::fs::remove_dir_all(&dir);
}
