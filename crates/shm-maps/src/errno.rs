//! Kernel-style error numbers returned by map operations.
//!
//! The syscall view returns `Result<_, Errno>`; the program view returns the
//! kernel's `i64` convention (`0` or `-errno`). Both use these values so the
//! syscall server can hand them straight back to the loader.

use std::fmt;

/// A positive kernel errno (`ENOENT`, `EEXIST`, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const E2BIG: Errno = Errno(libc::E2BIG);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const EFAULT: Errno = Errno(libc::EFAULT);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const EBADF: Errno = Errno(libc::EBADF);
    /// The kernel-internal `ENOTSUPP` (524) that `bpf()` leaks to userspace
    /// for operations a map type does not implement.
    pub const ENOTSUPP: Errno = Errno(524);

    /// The program-view return value for this error (`-errno`).
    #[inline]
    pub const fn as_neg(self) -> i64 {
        -(self.0 as i64)
    }

    /// Symbolic name, for messages.
    pub fn name(self) -> &'static str {
        match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::E2BIG => "E2BIG",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EINVAL => "EINVAL",
            libc::ENOSPC => "ENOSPC",
            libc::EFAULT => "EFAULT",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::EBADF => "EBADF",
            524 => "ENOTSUPP",
            _ => "errno",
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Errno {}

/// Converts a program-view result (`0` or `-errno`) into a `Result`.
#[inline]
pub fn from_ret(ret: i64) -> Result<(), Errno> {
    if ret < 0 {
        Err(Errno((-ret) as i32))
    } else {
        Ok(())
    }
}
