//! eBPF maps living in shared memory, and the per-user registry through which
//! loaders and traced processes find maps, programs and attachments.
//! Not implemented yet: see issue 3.
