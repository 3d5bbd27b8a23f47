//! `libsyscall_server.so`, preloaded into loaders (stock bpftrace, libbpf and
//! bcc tools): answers `bpf()`, `perf_event_open()` and the files, ioctls and
//! epoll calls around them from userbpf's registry instead of the kernel, so
//! an unprivileged loader can load programs that run inside traced apps.
//!
//! Modules:
//! - [`interpose`]: the exported libc symbols and their fast "not ours" paths;
//! - [`real`]: the real libc functions (`dlsym(RTLD_NEXT)`);
//! - [`bpf`]: every `bpf()` command; [`perf`]: `perf_event_open` + ioctls;
//! - [`objects`]: fd → object table (by `(dev, ino)`, so `dup` works);
//! - [`epoll`]: perf rings in epoll sets; [`sysfs`]: synthesized sysfs/tracefs;
//! - [`backend`]: the registry (`shm-maps`); [`verify`]: the verifier;
//! - [`loader_run`]: programs the loader runs itself (BEGIN/END, `interval:`)
//!   through the shared `runtime`; [`timer`]: `interval:`/`profile:` timers;
//! - [`child_env`]: children of the loader get the agent, not the server;
//! - [`caps`]: the capabilities `capget` reports to the loader;
//! - [`kheaders`]: kernel headers for bcc, joined from Debian's packages;
//! - [`kfunc`]: a program's kernel-function calls, by the running kernel's BTF;
//! - [`btf_info`]: a program's BTF function and line information;
//! - [`uaccess`]: copies from and to the loader's memory (EFAULT, not a crash).

// This build's identity, read by `userbpf` from the file (`--version`, and
// the check that it speaks the CLI's registry layout).
buildinfo::stamp!(shm_maps::LAYOUT_VERSION);

pub mod abi;
pub mod backend;
pub mod caps;
pub mod bpf;
pub mod btf_info;
pub mod child_env;
pub mod epoll;
pub mod interpose;
pub mod kfunc;
pub mod kheaders;
pub mod loader_run;
pub mod objects;
pub mod perf;
pub mod real;
pub mod report;
pub mod sysfs;
pub mod timer;
pub mod uaccess;
pub mod verify;

/// Runs when the loader maps the library (before its `main`).
extern "C" fn on_load() {
    report::save_stderr();
    child_env::rewrite_ld_preload();
    kheaders::point_bcc_at_headers();
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
