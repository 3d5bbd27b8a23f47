//! The crate's error type for registry and object-level operations.
//! Per-element map operations use the lighter [`Errno`] directly.

use std::io;
use std::path::PathBuf;

use crate::errno::Errno;

/// Errors from opening the registry or creating/opening objects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kernel-style failure (invalid map attributes, ENOMEM, ...).
    #[error("{what}: {errno}")]
    Errno { what: String, errno: Errno },
    /// An I/O failure on a registry path.
    #[error("{path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: io::Error },
    /// The registry directory is unsafe to use (wrong owner, too open, not a
    /// directory). The message names the fix.
    #[error("refusing userbpf directory {path}: {reason}")]
    UnsafeDir { path: PathBuf, reason: String },
    /// An object or registry file from another layout version or not ours.
    #[error("{path}: {reason}")]
    Incompatible { path: PathBuf, reason: String },
    /// No object with that id.
    #[error("no {kind} with id {id} in the registry")]
    NotFound { kind: &'static str, id: u32 },
}

impl Error {
    /// The errno a `bpf()` emulation should return for this error.
    pub fn errno(&self) -> Errno {
        match self {
            Error::Errno { errno, .. } => *errno,
            Error::Io { source, .. } => Errno(source.raw_os_error().unwrap_or(libc::EIO)),
            Error::UnsafeDir { .. } => Errno::EPERM,
            Error::Incompatible { .. } => Errno::EINVAL,
            Error::NotFound { .. } => Errno::ENOENT,
        }
    }

    pub(crate) fn kernel(what: impl Into<String>, errno: Errno) -> Error {
        Error::Errno { what: what.into(), errno }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Error {
        Error::Io { path: path.into(), op, source }
    }
}
