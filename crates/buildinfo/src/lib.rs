//! The build's identity: userbpf's version, the git commit it was built
//! from and the registry layout version it speaks, as one fixed-size
//! record ([`Stamp`]).
//!
//! Why a stamp in an ELF section: `userbpf` preloads its libraries into
//! other programs, and a library from another build that speaks another
//! registry layout would fail there, far from the user's command. Each
//! library carries its stamp in the `.userbpf_stamp` section, which the CLI
//! reads from the file without loading it (`userbpf --version` prints the
//! stamps; `run`, `load`, `bpftrace` and `attach` refuse a library whose
//! layout differs from their own, naming both).
#![no_std]

/// Name of the ELF section holding a library's [`Stamp`].
pub const SECTION: &str = ".userbpf_stamp";

/// Marks the start of a stamp.
pub const MAGIC: [u8; 8] = *b"UBPFSTMP";

/// userbpf's version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit of the build ("unknown" outside a git checkout).
pub const COMMIT: &str = env!("USERBPF_GIT_COMMIT");

/// The identity of one build, as laid out in [`SECTION`] (`repr(C)`, 64
/// bytes; strings NUL-padded).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub magic: [u8; 8],
    /// The registry layout version (`shm_maps::LAYOUT_VERSION`).
    pub layout: u32,
    _reserved: u32,
    pub version: [u8; 16],
    pub commit: [u8; 32],
}

const fn padded<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < b.len() && i < N {
        out[i] = b[i];
        i += 1;
    }
    out
}

fn text(b: &[u8]) -> &str {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    core::str::from_utf8(&b[..end]).unwrap_or("?")
}

impl Stamp {
    /// Size of a stamp in bytes.
    pub const SIZE: usize = core::mem::size_of::<Stamp>();

    /// This build's stamp, for a crate speaking registry layout `layout`.
    pub const fn current(layout: u32) -> Stamp {
        Stamp { magic: MAGIC, layout, _reserved: 0, version: padded(VERSION), commit: padded(COMMIT) }
    }

    /// The stamp at the start of `bytes` (a `.userbpf_stamp` section).
    pub fn parse(bytes: &[u8]) -> Option<Stamp> {
        if bytes.len() < Self::SIZE || bytes[..8] != MAGIC {
            return None;
        }
        let mut s = Stamp::current(0);
        s.layout = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        s.version.copy_from_slice(&bytes[16..32]);
        s.commit.copy_from_slice(&bytes[32..64]);
        Some(s)
    }

    pub fn version(&self) -> &str {
        text(&self.version)
    }

    pub fn commit(&self) -> &str {
        text(&self.commit)
    }
}

impl core::fmt::Display for Stamp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (commit {}, registry layout {})", self.version(), self.commit(), self.layout)
    }
}

/// Puts this build's stamp into the crate's `.userbpf_stamp` section; used
/// once by each library (`stamp!(shm_maps::LAYOUT_VERSION)`).
#[macro_export]
macro_rules! stamp {
    ($layout:expr) => {
        #[used]
        #[link_section = ".userbpf_stamp"]
        static USERBPF_STAMP: $crate::Stamp = $crate::Stamp::current($layout);
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn a_stamp_round_trips_through_its_bytes() {
        let s = Stamp::current(7);
        // SAFETY: Stamp is repr(C) plain data without padding.
        let bytes = unsafe { core::slice::from_raw_parts(&s as *const Stamp as *const u8, Stamp::SIZE) };
        assert_eq!(Stamp::SIZE, 64);
        assert_eq!(Stamp::parse(bytes), Some(s));
        assert_eq!(s.version(), VERSION);
        assert!(!s.commit().is_empty());
        assert_eq!(Stamp::parse(&bytes[..63]), None);
        let mut wrong = std::vec::Vec::from(bytes);
        wrong[0] ^= 1;
        assert_eq!(Stamp::parse(&wrong), None);
    }
}
