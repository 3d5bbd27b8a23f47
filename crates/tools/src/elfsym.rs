//! Finding where an exported function of a shared library sits in another
//! process: the symbol's value from the library's `.dynsym`, plus the load
//! bias computed from the process's mappings of that file.

use crate::procfs::Mapping;
use goblin::elf::{program_header::PT_LOAD, sym::STT_FUNC, sym::STT_GNU_IFUNC, Elf};

/// Finds the object whose file name satisfies `is_wanted` among `maps`, and its load bias.
///
/// The bias is the start of the mapping with file offset 0 (the first
/// `PT_LOAD` of every shared library produced by a standard linker), minus the
/// page-aligned virtual address of that segment, which the caller supplies
/// after reading the file (see [`resolve_symbol`]).
pub fn find_object(maps: &[Mapping], is_wanted: impl Fn(&str) -> bool) -> Option<&Mapping> {
    maps.iter().find(|m| m.offset == 0 && m.file_name().is_some_and(&is_wanted))
}

/// Whether a file name is glibc's C library (`libc.so.6`, or `libc-2.31.so` on old systems).
pub fn is_libc(file_name: &str) -> bool {
    file_name == "libc.so.6" || (file_name.starts_with("libc-") && file_name.ends_with(".so"))
}

/// Whether a file name is the dynamic loader (`ld-linux-x86-64.so.2`, `ld-2.31.so`).
pub fn is_dynamic_loader(file_name: &str) -> bool {
    file_name.starts_with("ld-linux") || (file_name.starts_with("ld-") && file_name.ends_with(".so"))
}

/// Errors while reading a library's symbols.
#[derive(Debug)]
pub enum SymbolError {
    Read(std::io::Error),
    Parse(String),
    /// None of the names asked for is a defined function in the object.
    Missing,
    /// The process's copy of the object is not the file on disk (replaced
    /// since the process mapped it, e.g. by a package upgrade).
    Mismatch(String),
}

/// Bytes of a function's code compared between the file and the process
/// before calling it.
const CODE_CHECK_LEN: usize = 16;

/// A function found in an object: its address in the process and the first
/// bytes of its code according to the file.
#[derive(Clone, Debug)]
pub struct ResolvedSymbol<'n> {
    pub name: &'n str,
    pub address: u64,
    pub code: Vec<u8>,
}

/// Resolves the first of `names` that `elf_bytes` defines as a function, given
/// the mapping of the object's offset-0 segment at `first_mapping_start`.
pub fn resolve_symbol<'n>(
    elf_bytes: &[u8],
    first_mapping_start: u64,
    names: &[&'n str],
) -> Result<ResolvedSymbol<'n>, SymbolError> {
    let elf = Elf::parse(elf_bytes).map_err(|e| SymbolError::Parse(e.to_string()))?;
    let first_load_vaddr = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD)
        .map(|ph| ph.p_vaddr & !0xfff)
        .min()
        .ok_or_else(|| SymbolError::Parse("no PT_LOAD segment".to_string()))?;
    let load_bias = first_mapping_start.wrapping_sub(first_load_vaddr);
    for &wanted in names {
        let found = elf.dynsyms.iter().find(|sym| {
            sym.st_value != 0
                && sym.st_shndx != 0
                && (sym.st_type() == STT_FUNC || sym.st_type() == STT_GNU_IFUNC)
                && elf.dynstrtab.get_at(sym.st_name) == Some(wanted)
        });
        if let Some(sym) = found {
            if sym.st_type() == STT_GNU_IFUNC {
                // Calling an ifunc resolver instead of the function would be wrong.
                return Err(SymbolError::Parse(format!("{wanted} is an indirect function (ifunc)")));
            }
            let segment = elf
                .program_headers
                .iter()
                .find(|ph| ph.p_type == PT_LOAD && ph.vm_range().contains(&(sym.st_value as usize)))
                .ok_or_else(|| SymbolError::Parse(format!("{wanted} lies in no loadable segment")))?;
            let file_offset = (sym.st_value - segment.p_vaddr + segment.p_offset) as usize;
            let code = elf_bytes
                .get(file_offset..file_offset + CODE_CHECK_LEN)
                .ok_or_else(|| SymbolError::Parse(format!("{wanted} lies outside the file")))?
                .to_vec();
            return Ok(ResolvedSymbol { name: wanted, address: load_bias.wrapping_add(sym.st_value), code });
        }
    }
    Err(SymbolError::Missing)
}

/// Reads the object mapped at `mapping` in process `pid` (through the
/// process's root, so objects of another mount namespace resolve too) and
/// resolves the first of `names` it defines, returning `(name, address)`.
///
/// The function's first bytes in the process must equal those in the file:
/// calling an address computed from a different build of the library (one
/// upgraded on disk after the process mapped it) would crash the process.
pub fn resolve_in_process<'n>(pid: i32, mapping: &Mapping, names: &[&'n str]) -> Result<(&'n str, u64), SymbolError> {
    let file = mapping.file().ok_or(SymbolError::Missing)?;
    let bytes = std::fs::read(crate::procfs::path_in_process_root(pid, file)).map_err(SymbolError::Read)?;
    let symbol = resolve_symbol(&bytes, mapping.start, names)?;
    let in_memory = crate::ptrace::read_memory(pid, symbol.address, symbol.code.len()).map_err(SymbolError::Read)?;
    if in_memory != symbol.code {
        return Err(SymbolError::Mismatch(format!(
            "the code of {} in process {pid} differs from {file} on disk (the file was replaced after the process loaded it?)",
            symbol.name
        )));
    }
    Ok((symbol.name, symbol.address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::read_maps;

    #[test]
    fn resolves_dlopen_in_own_libc_to_the_real_function() {
        let me = std::process::id() as i32;
        let maps = read_maps(me).unwrap();
        let libc_map = find_object(&maps, is_libc).expect("this test binary links glibc");
        let (name, addr) = resolve_in_process(me, libc_map, &["dlopen", "__libc_dlopen_mode"]).unwrap();
        assert_eq!(name, "dlopen");
        extern "C" {
            fn dlopen(filename: *const libc::c_char, flag: libc::c_int) -> *mut libc::c_void;
        }
        // The address computed from the ELF file must be the one the dynamic
        // linker resolved for us.
        assert_eq!(addr, dlopen as *const () as usize as u64);
        let (_, getpid_addr) = resolve_in_process(me, libc_map, &["getpid"]).unwrap();
        assert_eq!(getpid_addr, libc::getpid as *const () as usize as u64);
    }

    #[test]
    fn a_different_build_on_disk_is_detected() {
        let me = std::process::id() as i32;
        let maps = read_maps(me).unwrap();
        let libc_map = find_object(&maps, is_libc).unwrap();
        let bytes = std::fs::read(libc_map.file().unwrap()).unwrap();
        let real = resolve_symbol(&bytes, libc_map.start, &["getpid"]).unwrap();
        // The same file seen at another base: the code check reads other bytes.
        let shifted = resolve_symbol(&bytes, libc_map.start + 0x1000, &["getpid"]).unwrap();
        assert_eq!(shifted.address, real.address + 0x1000);
        let here = crate::ptrace::read_memory(me, real.address, real.code.len()).unwrap();
        assert_eq!(here, real.code);
        let there = crate::ptrace::read_memory(me, shifted.address, shifted.code.len()).unwrap();
        assert_ne!(there, shifted.code);
    }

    #[test]
    fn missing_symbols_are_reported_as_missing() {
        let me = std::process::id() as i32;
        let maps = read_maps(me).unwrap();
        let libc_map = find_object(&maps, is_libc).unwrap();
        assert!(matches!(
            resolve_in_process(me, libc_map, &["no_such_function_in_libc"]),
            Err(SymbolError::Missing)
        ));
    }

    #[test]
    fn recognises_libc_and_loader_names() {
        assert!(is_libc("libc.so.6"));
        assert!(is_libc("libc-2.31.so"));
        assert!(!is_libc("libcrypto.so.3"));
        assert!(is_dynamic_loader("ld-linux-x86-64.so.2"));
        assert!(!is_dynamic_loader("libdl.so.2"));
    }
}

/// An ELF file opened for reading its headers alone: the file, its ELF
/// header and the parsing context it names. For reading one table or
/// section without reading (or mapping) the whole file.
pub fn open_headers(path: &std::path::Path) -> Result<(std::fs::File, goblin::elf::Header, goblin::container::Ctx), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut ident = [0u8; 64];
    f.read_exact(&mut ident).map_err(|_| "not an ELF file".to_string())?;
    let header = Elf::parse_header(&ident).map_err(|e| e.to_string())?;
    let ctx = goblin::container::Ctx::new(
        header.container().map_err(|e| e.to_string())?,
        header.endianness().map_err(|e| e.to_string())?,
    );
    Ok((f, header, ctx))
}
