//! This process's memory map (`/proc/self/maps`): file offset → running
//! address (the last step of resolving a `perf_event_open` uprobe request),
//! address → mapping, and free gaps for trampolines near a target.
//!
//! Files are matched by device and inode *or* by canonical path, so a request
//! naming the file through a symlink or another spelling still finds it.

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Names a mapped file: by path (any spelling) or by device and inode
/// (`st_dev` encoding, as `stat(2)` returns it).
#[derive(Clone, Copy, Debug)]
pub enum FileRef<'a> {
    Path(&'a Path),
    DevIno { dev: u64, ino: u64 },
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// `MAP_SHARED` (writes would reach the file and every process mapping it).
    pub shared: bool,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// `st_dev` encoding of the device.
    pub dev: u64,
    pub inode: u64,
    /// Path column, empty for anonymous mappings; may be `[heap]`, `[vdso]`, …
    pub path: PathBuf,
}

impl Mapping {
    /// The file offset that `address` (inside this mapping) maps.
    pub fn file_offset_of(&self, address: usize) -> u64 {
        self.offset + (address - self.start) as u64
    }

    /// Whether the path column is a real file path (not `[vdso]`, not deleted).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_os_str().as_bytes().first() == Some(&b'/')
    }
}

/// Parses `/proc/self/maps` now.
pub fn read_self_maps() -> Result<Vec<Mapping>> {
    let path = Path::new("/proc/self/maps");
    let text = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
    Ok(text.split(|&b| b == b'\n').filter_map(parse_line).collect())
}

fn parse_line(line: &[u8]) -> Option<Mapping> {
    let mut fields = line.splitn(6, |&b| b == b' ');
    let range = std::str::from_utf8(fields.next()?).ok()?;
    let perms = fields.next()?;
    let offset = std::str::from_utf8(fields.next()?).ok()?;
    let dev = std::str::from_utf8(fields.next()?).ok()?;
    let inode = std::str::from_utf8(fields.next()?).ok()?;
    let path = fields.next().map(|p| p.trim_ascii_start()).unwrap_or(b"");
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let (major, minor) = (u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?);
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        readable: perms.first() == Some(&b'r'),
        writable: perms.get(1) == Some(&b'w'),
        executable: perms.get(2) == Some(&b'x'),
        shared: perms.get(3) == Some(&b's'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: libc::makedev(major, minor),
        inode: inode.parse().ok()?,
        path: PathBuf::from(OsStr::from_bytes(path)),
    })
}

/// Running address, in this process, of byte `offset` of `file`, looked up
/// in its executable mappings (a uprobe always targets code).
pub fn file_offset_to_address(file: FileRef<'_>, offset: u64) -> Result<usize> {
    let maps = read_self_maps()?;
    let (want_dev_ino, want_path) = match file {
        FileRef::Path(p) => {
            let meta = std::fs::metadata(p).map_err(|source| Error::Io { path: p.into(), source })?;
            (Some((meta.dev(), meta.ino())), std::fs::canonicalize(p).ok())
        }
        FileRef::DevIno { dev, ino } => (Some((dev, ino)), None),
    };
    let matches_file = |m: &Mapping| {
        want_dev_ino == Some((m.dev, m.inode)) || (want_path.as_deref() == Some(m.path.as_path()) && m.is_file())
    };
    maps.iter()
        .filter(|m| m.executable && matches_file(m))
        .find(|m| offset >= m.offset && offset < m.offset + (m.end - m.start) as u64)
        .map(|m| m.start + (offset - m.offset) as usize)
        .ok_or_else(|| Error::OffsetNotMapped {
            file: match file {
                FileRef::Path(p) => p.display().to_string(),
                FileRef::DevIno { dev, ino } => format!("dev {dev:#x} inode {ino}"),
            },
            offset,
        })
}

/// The mapping containing `address`, if any.
pub fn mapping_of(address: usize) -> Result<Option<Mapping>> {
    Ok(read_self_maps()?.into_iter().find(|m| address >= m.start && address < m.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_file_line_and_an_anonymous_line() {
        let m = parse_line(b"7f1c2a400000-7f1c2a428000 r-xp 00028000 08:01 1312  /usr/lib/x86_64-linux-gnu/libc.so.6")
            .unwrap();
        assert_eq!((m.start, m.end, m.offset, m.inode), (0x7f1c2a400000, 0x7f1c2a428000, 0x28000, 1312));
        assert!(m.readable && !m.writable && m.executable && !m.shared && m.is_file());
        assert_eq!(m.dev, libc::makedev(8, 1));
        assert_eq!(m.path, Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        let anon = parse_line(b"7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").unwrap();
        assert!(!anon.is_file() && anon.writable && !anon.executable);
        assert!(parse_line(b"7ffd1000-7ffd2000 r-xs 00000000 00:05 77 /memfd:jit").unwrap().shared);
        assert!(parse_line(b"garbage").is_none());
    }
}
