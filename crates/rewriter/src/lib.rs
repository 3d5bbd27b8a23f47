//! Live patching of function prologues into trampolines (uprobe / uretprobe),
//! ELF symbol resolution and instruction relocation with iced-x86.
//! Not implemented yet: see issue 4.
