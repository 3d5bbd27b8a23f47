//! The build stamps of userbpf's libraries (`buildinfo::Stamp`, in their
//! `.userbpf_stamp` section), read from the files without loading them:
//! `userbpf --version` reports them, and a library whose registry layout
//! is not this userbpf's is refused by name before anything preloads it.

use std::os::unix::fs::FileExt;
use std::path::Path;

use buildinfo::Stamp;
use goblin::elf::section_header::SectionHeader;

use crate::error::{exit, CliError, CliResult};

/// This userbpf's own stamp.
pub fn own() -> Stamp {
    Stamp::current(shm_maps::LAYOUT_VERSION)
}

/// The stamp in the library at `path`: `Ok(None)` when it has none (not a
/// userbpf library, or one built before stamps). Reads the ELF and section
/// headers and the stamp's section only.
pub fn read(path: &Path) -> Result<Option<Stamp>, String> {
    let (f, header, ctx) = crate::elfsym::open_headers(path)?;
    let count = header.e_shnum as usize;
    let mut table = vec![0u8; count * header.e_shentsize as usize];
    f.read_exact_at(&mut table, header.e_shoff).map_err(|e| e.to_string())?;
    // parse_from: `table` holds the headers alone (offset 0 is theirs).
    let sections = SectionHeader::parse_from(&table, 0, count, ctx).map_err(|e| e.to_string())?;
    let Some(names) = sections.get(header.e_shstrndx as usize) else { return Ok(None) };
    let mut strtab = vec![0u8; names.sh_size as usize];
    f.read_exact_at(&mut strtab, names.sh_offset).map_err(|e| e.to_string())?;
    let name_of = |s: &SectionHeader| {
        let start = s.sh_name;
        let end = strtab[start.min(strtab.len())..].iter().position(|&b| b == 0).map(|n| start + n);
        end.map(|end| &strtab[start..end])
    };
    let Some(section) = sections.iter().find(|s| name_of(s) == Some(buildinfo::SECTION.as_bytes())) else {
        return Ok(None);
    };
    let mut bytes = vec![0u8; (section.sh_size as usize).min(Stamp::SIZE)];
    f.read_exact_at(&mut bytes, section.sh_offset).map_err(|e| e.to_string())?;
    Ok(Stamp::parse(&bytes))
}

/// Refuses a library at `path` stamped with another registry layout; a
/// library without a stamp is used, with a warning.
pub fn check(path: &Path) -> CliResult<()> {
    let mine = own();
    match read(path) {
        Ok(Some(theirs)) if theirs.layout == mine.layout => Ok(()),
        Ok(Some(theirs)) => Err(CliError::with_code(
            exit::ENVIRONMENT,
            format!(
                "{} is from another userbpf build: {theirs}; this userbpf is {mine}, and the registry layouts differ",
                path.display()
            ),
        )
        .hint("use the libraries built with this userbpf (they are installed next to it), or set $USERBPF_LIB_DIR to them")),
        Ok(None) => {
            eprintln!("userbpf: warning: {} carries no userbpf build stamp; using it as it is", path.display());
            Ok(())
        }
        Err(why) => Err(CliError::with_code(exit::ENVIRONMENT, format!("cannot read {}: {why}", path.display()))),
    }
}

