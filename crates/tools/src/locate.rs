//! Finding userbpf's preloadable libraries (`libagent.so`,
//! `libsyscall_server.so`) without the user typing a path.
//!
//! Search order:
//! 1. `$USERBPF_LIB_DIR`, when set (an explicit choice: if the library is not
//!    there, that is an error, not a reason to look elsewhere);
//! 2. the directory of the `userbpf` executable (cargo puts the binary and
//!    the cdylibs of a workspace in the same profile directory);
//! 3. `<prefix>/lib/userbpf`, where `<prefix>` is the parent of the
//!    executable's directory (`/usr/local/bin/userbpf` → `/usr/local/lib/userbpf`).

use crate::error::{exit, CliError, CliResult};
use std::path::{Path, PathBuf};

/// Environment variable naming the directory holding the userbpf libraries.
pub const LIB_DIR_ENV: &str = "USERBPF_LIB_DIR";

/// One of the libraries userbpf preloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Library {
    /// `libagent.so`: preloaded into (or injected into) traced applications.
    Agent,
    /// `libsyscall_server.so`: preloaded into loaders (bpftrace, libbpf and bcc tools).
    SyscallServer,
}

impl Library {
    /// The library's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Library::Agent => "libagent.so",
            Library::SyscallServer => "libsyscall_server.so",
        }
    }

    fn cargo_package(self) -> &'static str {
        match self {
            Library::Agent => "agent",
            Library::SyscallServer => "syscall-server",
        }
    }
}

/// The directories searched, in order, with the reason each is searched.
pub fn search_dirs() -> Vec<(PathBuf, &'static str)> {
    if let Some(dir) = std::env::var_os(LIB_DIR_ENV).filter(|d| !d.is_empty()) {
        return vec![(PathBuf::from(dir), "$USERBPF_LIB_DIR")];
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.canonicalize().unwrap_or(exe);
        if let Some(bin_dir) = exe.parent() {
            dirs.push((bin_dir.to_path_buf(), "next to the userbpf executable"));
            if let Some(prefix) = bin_dir.parent() {
                dirs.push((prefix.join("lib/userbpf"), "install prefix"));
            }
        }
    }
    dirs
}

/// Finds `library`, returning its absolute path.
pub fn find(library: Library) -> CliResult<PathBuf> {
    let dirs = search_dirs();
    for (dir, _) in &dirs {
        let candidate = dir.join(library.file_name());
        if candidate.is_file() {
            return Ok(absolute(&candidate));
        }
    }
    let searched: Vec<String> = dirs.iter().map(|(d, why)| format!("{} ({why})", d.display())).collect();
    let hint = if std::env::var_os(LIB_DIR_ENV).is_some() {
        format!("${LIB_DIR_ENV} is set: point it at the directory holding {}, or unset it", library.file_name())
    } else {
        format!(
            "build it with `cargo build -p {}` (add --release for a release userbpf; it lands next to userbpf), or set ${LIB_DIR_ENV}",
            library.cargo_package()
        )
    };
    Err(CliError::with_code(
        exit::ENVIRONMENT,
        format!("cannot find {}; searched {}", library.file_name(), searched.join(", ")),
    )
    .hint(hint))
}

/// [`find`], refusing a library from a build with another registry layout
/// (see `stamp.rs`): what `run`, `load`, `bpftrace` and `attach` preload.
pub fn find_compatible(library: Library) -> CliResult<PathBuf> {
    let path = find(library)?;
    crate::stamp::check(&path)?;
    Ok(path)
}

fn absolute(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}
