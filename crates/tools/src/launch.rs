//! `userbpf run`, `userbpf load` and `userbpf bpftrace`: replacing userbpf
//! with the given command, with a userbpf library prepended to `LD_PRELOAD`.
//!
//! userbpf `exec`s the command rather than spawning it: the command keeps
//! userbpf's pid (so `userbpf run ./app & pid=$!` names the app), receives
//! signals directly, and its exit status is the command's exit status.

use crate::error::{exit, os_error_text, CliError, CliResult};
use crate::locate::{self, Library};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// `LD_PRELOAD` with `library` first, keeping whatever was there (once).
pub fn prepend_preload(library: &Path, existing: Option<&OsStr>) -> OsString {
    let mut value = OsString::from(library.as_os_str());
    if let Some(existing) = existing {
        let others: Vec<&[u8]> = existing
            .as_bytes()
            .split(|&b| b == b':' || b == b' ')
            .filter(|entry| !entry.is_empty() && *entry != library.as_os_str().as_bytes())
            .collect();
        for entry in others {
            value.push(":");
            value.push(OsStr::from_bytes(entry));
        }
    }
    value
}

/// Where `program` would be found by `exec` (`$PATH` unless it names a
/// path), if anywhere.
fn resolve(program: &OsStr) -> Option<std::path::PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(program.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Whether `path` is an ELF executable without a program interpreter
/// (statically linked, static-pie included): no dynamic loader runs in it,
/// so nothing reads `LD_PRELOAD`. Only the ELF and program headers are read.
fn is_static_elf(path: &Path) -> bool {
    use goblin::elf::program_header::{ProgramHeader, PT_INTERP};
    use std::os::unix::fs::FileExt;
    let Ok((f, header, ctx)) = crate::elfsym::open_headers(path) else { return false };
    let mut table = vec![0u8; header.e_phnum as usize * header.e_phentsize as usize];
    if f.read_exact_at(&mut table, header.e_phoff).is_err() {
        return false;
    }
    match ProgramHeader::parse(&table, 0, header.e_phnum as usize, ctx) {
        Ok(phdrs) => !phdrs.is_empty() && !phdrs.iter().any(|p| p.p_type == PT_INTERP),
        Err(_) => false,
    }
}

/// Replaces this process with `command` preloaded with `library`. Returns only on failure.
pub fn exec_with(library: Library, command: &[OsString]) -> CliResult {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| CliError::with_code(exit::USAGE, "no command given").hint("example: userbpf run -- ./app --flag"))?;
    let path = locate::find_compatible(library)?;
    let path_bytes = path.as_os_str().as_bytes();
    if path_bytes.contains(&b':') || path_bytes.contains(&b' ') {
        return Err(CliError::with_code(
            exit::ENVIRONMENT,
            format!("{} contains ':' or a space, which LD_PRELOAD cannot express", path.display()),
        )
        .hint("install userbpf under a path without spaces or colons"));
    }
    if let Some(exe) = resolve(program).filter(|p| is_static_elf(p)) {
        let what = match library {
            Library::Agent => "it will run untraced",
            Library::SyscallServer => "its bpf() calls go to the kernel",
        };
        eprintln!(
            "userbpf: warning: {} is statically linked: no dynamic loader runs in it to read LD_PRELOAD, so {} cannot be loaded and {what}",
            exe.display(),
            library.file_name()
        );
    }
    let preload = prepend_preload(&path, std::env::var_os("LD_PRELOAD").as_deref());
    let err = std::process::Command::new(program).args(args).env("LD_PRELOAD", preload).exec();
    let shown = program.to_string_lossy();
    Err(match err.raw_os_error() {
        Some(libc::ENOENT) => CliError::with_code(exit::COMMAND_NOT_FOUND, format!("command not found: {shown}"))
            .hint(if shown == "bpftrace" {
                "install bpftrace (Debian: `apt-get install bpftrace`); `userbpf doctor` checks the machine"
            } else {
                "give a path (./app) or a command in $PATH"
            }),
        Some(libc::EACCES) | Some(libc::ENOEXEC) => {
            CliError::with_code(exit::CANNOT_EXECUTE, format!("cannot execute {shown}: {}", os_error_text(&err)))
        }
        _ => CliError::with_code(exit::CANNOT_EXECUTE, format!("cannot execute {shown}: {}", os_error_text(&err))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_is_prepended_and_deduplicated() {
        let lib = Path::new("/opt/userbpf/libagent.so");
        assert_eq!(prepend_preload(lib, None), OsString::from("/opt/userbpf/libagent.so"));
        assert_eq!(
            prepend_preload(lib, Some(OsStr::new("/a.so /b.so:/opt/userbpf/libagent.so"))),
            OsString::from("/opt/userbpf/libagent.so:/a.so:/b.so")
        );
        assert_eq!(prepend_preload(lib, Some(OsStr::new(""))), OsString::from("/opt/userbpf/libagent.so"));
    }
}
