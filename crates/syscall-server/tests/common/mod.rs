//! Calls into the server's exported `syscall`/`mmap` exactly as a
//! preloaded loader's libc calls would reach them, shared by the ABI tests.
#![allow(dead_code)] // each test binary uses a part

use std::ffi::c_void;

pub use syscall_server::interpose;

pub const BPF_MAP_CREATE: i64 = 0;
pub const BPF_MAP_LOOKUP_ELEM: i64 = 1;
pub const BPF_MAP_UPDATE_ELEM: i64 = 2;
pub const BPF_MAP_FREEZE: i64 = 22;
pub const ARRAY: u32 = 2;
pub const CGROUP_ARRAY: u32 = 8;
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
pub const PAGE: usize = 4096;

/// `bpf(cmd, attr)`: the result or `Err(errno)`.
pub fn bpf(cmd: i64, attr: &mut [u8; 128]) -> Result<i64, i32> {
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

pub fn map_create(
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
pub fn elem(cmd: i64, fd: i32, key: u32, value: &mut [u8]) -> Result<i64, i32> {
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    a[8..16].copy_from_slice(&(&key as *const u32 as u64).to_ne_bytes());
    a[16..24].copy_from_slice(&(value.as_mut_ptr() as u64).to_ne_bytes());
    bpf(cmd, &mut a)
}

pub fn freeze(fd: i32) -> Result<i64, i32> {
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    bpf(BPF_MAP_FREEZE, &mut a)
}

/// `mmap(NULL, len, prot, MAP_SHARED, fd, 0)`.
pub fn map_shared(fd: i32, len: usize, prot: i32) -> Result<*mut u8, i32> {
    // SAFETY: a fresh shared mapping of our own fd.
    let p = unsafe { interpose::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(p as *mut u8)
    }
}

pub fn unmap(p: *mut u8, len: usize) {
    // SAFETY: p is a mapping of len bytes made by map_shared.
    unsafe { libc::munmap(p as *mut c_void, len) };
}


/// A private scratch registry directory, made the server's (`USERBPF_DIR`,
/// read once per process: one test function per binary).
pub fn scratch_registry(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("userbpf-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    std::env::set_var("USERBPF_DIR", &dir);
    dir
}
