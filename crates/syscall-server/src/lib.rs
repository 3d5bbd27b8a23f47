//! `libsyscall_server.so`, preloaded into loaders (bpftrace, libbpf and bcc
//! tools): answers `bpf()`, `perf_event_open` and friends from userbpf
//! instead of the kernel. Not implemented yet: see issue 5.
