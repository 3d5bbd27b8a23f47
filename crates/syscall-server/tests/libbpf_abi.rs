//! The kernel behaviours libbpf 1.x relies on at load, checked through the
//! server's exported `syscall`/`mmap`/`close` (called directly: they are the
//! functions a preloaded loader's libc calls resolve to): `.rodata`-style maps (frozen: EPERM on writes,
//! EPERM on a second freeze, no writable mapping), `mmap` of an mmapable
//! array showing its values at offset 0, `CGROUP_ARRAY`, and perf rings
//! mapped with libbpf's page count.
//!
//! One test function: the server's registry is process-wide, opened once
//! from `USERBPF_DIR`.

use std::ffi::c_void;

use syscall_server::interpose;

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_LOOKUP_ELEM: i64 = 1;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_MAP_FREEZE: i64 = 22;
const ARRAY: u32 = 2;
const CGROUP_ARRAY: u32 = 8;
const BPF_F_RDONLY_PROG: u32 = 1 << 7;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const PAGE: usize = 4096;

/// `bpf(cmd, attr)`: the result or `Err(errno)`.
fn bpf(cmd: i64, attr: &mut [u8; 128]) -> Result<i64, i32> {
    // SAFETY: attr is a 128-byte bpf_attr the server reads (and may write).
    let r = unsafe {
        interpose::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr() as i64,
            attr.len() as i64,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> Result<i32, i32> {
    let mut a = [0u8; 128];
    for (off, v) in [
        (0, map_type),
        (4, key_size),
        (8, value_size),
        (12, max_entries),
        (16, flags),
    ] {
        a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    bpf(BPF_MAP_CREATE, &mut a).map(|fd| fd as i32)
}

/// `BPF_MAP_{LOOKUP,UPDATE}_ELEM` with a u32 key and a value buffer.
fn elem(cmd: i64, fd: i32, key: u32, value: &mut [u8]) -> Result<i64, i32> {
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    a[8..16].copy_from_slice(&(&key as *const u32 as u64).to_ne_bytes());
    a[16..24].copy_from_slice(&(value.as_mut_ptr() as u64).to_ne_bytes());
    bpf(cmd, &mut a)
}

fn freeze(fd: i32) -> Result<i64, i32> {
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    bpf(BPF_MAP_FREEZE, &mut a)
}

/// `mmap(NULL, len, prot, MAP_SHARED, fd, 0)`.
fn map_shared(fd: i32, len: usize, prot: i32) -> Result<*mut u8, i32> {
    // SAFETY: a fresh shared mapping of our own fd.
    let p = unsafe { interpose::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(p as *mut u8)
    }
}

fn unmap(p: *mut u8, len: usize) {
    // SAFETY: p is a mapping of len bytes made by map_shared.
    unsafe { libc::munmap(p as *mut c_void, len) };
}

#[test]
fn libbpf_load_time_abi() {
    let dir = std::env::temp_dir().join(format!("userbpf-libbpf-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    std::env::set_var("USERBPF_DIR", &dir);

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
