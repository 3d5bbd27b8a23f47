//! The capabilities the loader is told it has.
//!
//! Loaders refuse to start without the capabilities kernel BPF needs:
//! bpftrace 0.27 checks CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH and
//! others through `capget`; libbpf tools and bcc check the euid (answered
//! by the `geteuid` interposer). The server does what those capabilities
//! would allow a kernel loader to do, so it reports them, in the effective
//! and permitted sets, for the loader's own process only (never for
//! another pid, so a tool inspecting other processes sees the truth). The
//! report grants nothing: no real capability is raised, and every file the
//! loader opens is still checked by the kernel against the real ones. The
//! traced apps never load the server (its children get the agent instead).

use std::ffi::c_void;

/// `CAP_DAC_READ_SEARCH`, `CAP_SYS_ADMIN`, `CAP_SYS_RESOURCE`,
/// `CAP_PERFMON`, `CAP_BPF`: what kernel BPF tracing asks for.
pub const REPORTED: [u32; 5] = [2, 21, 24, 38, 39];

const VERSION_1: u32 = 0x1998_0330;
const VERSION_2: u32 = 0x2007_1026;
const VERSION_3: u32 = 0x2008_0522;

/// Add [`REPORTED`] to the effective and permitted sets of a successful
/// `capget(hdr, data)` about this process.
///
/// # Safety
/// `hdr` is a `cap_user_header_t` and `data` null or the matching
/// `cap_user_data_t` array (one entry for version 1, two for 2 and 3).
pub unsafe fn grant(hdr: *mut c_void, data: *mut c_void) {
    if hdr.is_null() || data.is_null() {
        return;
    }
    // SAFETY: caller contract: { u32 version; i32 pid }.
    let (version, pid) = unsafe { (*(hdr as *const u32), *(hdr as *const i32).add(1)) };
    // SAFETY: getpid has no preconditions.
    if pid != 0 && pid != unsafe { libc::getpid() } {
        return;
    }
    let words = match version {
        VERSION_1 => 1,
        VERSION_2 | VERSION_3 => 2,
        _ => return,
    };
    // Each entry: { u32 effective; u32 permitted; u32 inheritable }.
    let entries = data as *mut [u32; 3];
    for cap in REPORTED {
        let (word, bit) = ((cap / 32) as usize, cap % 32);
        if word < words {
            // SAFETY: `word` < the entry count of this version.
            let e = unsafe { &mut *entries.add(word) };
            e[0] |= 1 << bit;
            e[1] |= 1 << bit;
        }
    }
}
