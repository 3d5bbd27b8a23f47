//! ELF symbol resolution: function symbols of an executable or shared library
//! (`.symtab` and `.dynsym`, PIE or not) and their **file offsets**, the unit
//! in which `perf_event_open` uprobe requests name a probe point.
//!
//! A file offset is computed as the kernel and bpftrace do: find the
//! `PT_LOAD` segment whose file image contains the symbol's virtual address,
//! then `offset = vaddr - p_vaddr + p_offset`.

use crate::error::{Error, Result};
use goblin::elf::{program_header::PT_LOAD, section_header::SHN_UNDEF, sym, Elf};
use std::path::Path;

/// One function symbol of an ELF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSymbol {
    pub name: String,
    /// Virtual address as written in the file (not relocated).
    pub vaddr: u64,
    /// Offset of the first instruction in the file.
    pub file_offset: u64,
    /// `st_size`; 0 when the symbol does not say.
    pub size: u64,
}

/// All defined function symbols (`STT_FUNC` and `STT_GNU_IFUNC`) of the file,
/// from `.symtab` and `.dynsym`, sorted by file offset, without duplicates of
/// the same (name, offset). Aliases (several names, one offset) are all kept.
pub fn list_functions(path: &Path) -> Result<Vec<FunctionSymbol>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
    list_functions_in(path, &bytes)
}

/// File offset of the function `name` in the ELF file at `path`.
pub fn resolve_symbol(path: &Path, name: &str) -> Result<u64> {
    list_functions(path)?
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| f.file_offset)
        .ok_or_else(|| Error::SymbolNotFound { path: path.into(), name: name.into() })
}

/// Converts a virtual address of the file at `path` to its file offset.
pub fn vaddr_to_file_offset(path: &Path, vaddr: u64) -> Result<u64> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let elf = parse(path, &bytes)?;
    file_offset_of(&elf, vaddr).ok_or(Error::AddressNotInFile { path: path.into(), vaddr })
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<Elf<'a>> {
    let elf = Elf::parse(bytes).map_err(|e| Error::Elf { path: path.into(), reason: e.to_string() })?;
    if !elf.is_64 || elf.header.e_machine != goblin::elf::header::EM_X86_64 {
        return Err(Error::Elf { path: path.into(), reason: "not an x86-64 ELF64 file".into() });
    }
    Ok(elf)
}

fn file_offset_of(elf: &Elf, vaddr: u64) -> Option<u64> {
    elf.program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD)
        .find(|ph| vaddr >= ph.p_vaddr && vaddr < ph.p_vaddr + ph.p_filesz)
        .map(|ph| vaddr - ph.p_vaddr + ph.p_offset)
}

pub(crate) fn list_functions_in(path: &Path, bytes: &[u8]) -> Result<Vec<FunctionSymbol>> {
    let elf = parse(path, bytes)?;
    let mut out = Vec::new();
    let tables = [(&elf.syms, &elf.strtab), (&elf.dynsyms, &elf.dynstrtab)];
    for (symbols, strings) in tables {
        for s in symbols.iter() {
            let is_function = matches!(s.st_type(), sym::STT_FUNC | sym::STT_GNU_IFUNC);
            if !is_function || s.st_shndx == SHN_UNDEF as usize || s.st_value == 0 {
                continue;
            }
            let Some(name) = strings.get_at(s.st_name).filter(|n| !n.is_empty()) else { continue };
            // Versioned dynamic names never carry "@" in .dynstr; .symtab may
            // ("memcpy@GLIBC_2.2.5"): keep the plain name, as bpftrace does.
            let name = name.split('@').next().unwrap_or(name);
            let Some(file_offset) = file_offset_of(&elf, s.st_value) else { continue };
            out.push(FunctionSymbol { name: name.to_string(), vaddr: s.st_value, file_offset, size: s.st_size });
        }
    }
    out.sort_by(|a, b| (a.file_offset, &a.name).cmp(&(b.file_offset, &b.name)));
    // Same symbol in both tables: keep one, preferring the entry with a size.
    out.dedup_by(|later, earlier| {
        let same = later.name == earlier.name && later.file_offset == earlier.file_offset;
        if same && earlier.size == 0 {
            earlier.size = later.size;
        }
        same
    });
    Ok(out)
}
