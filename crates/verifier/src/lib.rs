//! The static verifier: proves an eBPF program safe before it may run inside
//! someone else's process (abstract interpretation over all paths, kernel
//! errnos and a kernel-shaped verifier log). Not implemented yet: see issue 6.
