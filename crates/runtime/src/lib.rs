//! The in-process eBPF runtime shared by `libagent.so` (programs attached to
//! a traced app's functions) and `libsyscall_server.so` (programs the loader
//! runs itself: BEGIN/END, `interval:`): loading a program from the registry,
//! binding its maps, JIT-compiling it, and the helper implementations.
//! Not implemented yet: see issue 5.
