//! Addresses of a process to function names, for `userbpf profile`: the
//! mapping an address falls in gives the file and the file offset, the
//! file's `PT_LOAD` segments the ELF virtual address, and its symbol tables
//! (`.symtab`, else `.dynsym`) the function (goblin). Files are read through
//! the process's root (`/proc/PID/root`), so a process of another mount
//! namespace resolves too, and parsed once each.

use crate::procfs::Mapping;
use goblin::elf::{program_header::PT_LOAD, sym::STT_FUNC, Elf};
use std::collections::HashMap;

/// One file's functions.
struct FileSymbols {
    /// `(p_offset, p_filesz, p_vaddr)` of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
    /// `(start, end, name)`, sorted by start.
    functions: Vec<(u64, u64, String)>,
}

impl FileSymbols {
    fn read(path: &str, pid: i32) -> Option<FileSymbols> {
        let bytes = std::fs::read(format!("/proc/{pid}/root{path}"))
            .or_else(|_| std::fs::read(path))
            .ok()?;
        let elf = Elf::parse(&bytes).ok()?;
        let segments = elf
            .program_headers
            .iter()
            .filter(|ph| ph.p_type == PT_LOAD)
            .map(|ph| (ph.p_offset, ph.p_filesz, ph.p_vaddr))
            .collect();
        let named = |value: u64, size: u64, name: Option<&str>| {
            name.filter(|n| !n.is_empty())
                .map(|n| (value, value + size.max(1), n.to_string()))
        };
        let mut functions: Vec<(u64, u64, String)> = elf
            .syms
            .iter()
            .filter(|s| s.st_type() == STT_FUNC && s.st_value != 0)
            .filter_map(|s| named(s.st_value, s.st_size, elf.strtab.get_at(s.st_name)))
            .collect();
        if functions.is_empty() {
            // A stripped file: its separate debug file has the full symbol
            // table at the same addresses (/usr/lib/debug/.build-id/, as perf
            // and gdb find it).
            if let Some(debug) = build_id(&elf, &bytes).and_then(|id| debug_symbols(&id, pid)) {
                functions = debug;
            }
        }
        if functions.is_empty() {
            functions = elf
                .dynsyms
                .iter()
                .filter(|s| s.st_type() == STT_FUNC && s.st_value != 0)
                .filter_map(|s| named(s.st_value, s.st_size, elf.dynstrtab.get_at(s.st_name)))
                .collect();
        }
        functions.sort_by_key(|f| f.0);
        Some(FileSymbols {
            segments,
            functions,
        })
    }

    fn function_at(&self, file_offset: u64) -> Option<&str> {
        let &(p_offset, _, p_vaddr) = self
            .segments
            .iter()
            .find(|&&(off, size, _)| file_offset >= off && file_offset < off + size)?;
        let vaddr = file_offset - p_offset + p_vaddr;
        let i = self.functions.partition_point(|f| f.0 <= vaddr);
        let (start, end, name) = self.functions.get(i.checked_sub(1)?)?;
        (vaddr >= *start && vaddr < *end).then_some(name.as_str())
    }
}

/// The file's GNU build id (hex).
fn build_id(elf: &Elf, bytes: &[u8]) -> Option<String> {
    let notes = elf.iter_note_headers(bytes)?;
    notes
        .flatten()
        .find(|n| n.n_type == goblin::elf::note::NT_GNU_BUILD_ID && n.name == "GNU")
        .map(|n| n.desc.iter().map(|b| format!("{b:02x}")).collect())
}

/// The functions of the debug file of build id `id`, if installed.
fn debug_symbols(id: &str, pid: i32) -> Option<Vec<(u64, u64, String)>> {
    if id.len() < 3 {
        return None;
    }
    let path = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
    let bytes = std::fs::read(format!("/proc/{pid}/root{path}")).or_else(|_| std::fs::read(&path)).ok()?;
    let elf = Elf::parse(&bytes).ok()?;
    let mut functions: Vec<(u64, u64, String)> = elf
        .syms
        .iter()
        .filter(|s| s.st_type() == STT_FUNC && s.st_value != 0)
        .filter_map(|s| Some((s.st_value, s.st_value + s.st_size.max(1), elf.strtab.get_at(s.st_name)?.to_string())))
        .collect();
    functions.sort_by_key(|f| f.0);
    (!functions.is_empty()).then_some(functions)
}

/// Names addresses of one process.
pub struct Symbolizer {
    pid: i32,
    files: HashMap<String, Option<FileSymbols>>,
}

impl Symbolizer {
    pub fn new(pid: i32) -> Symbolizer {
        Symbolizer {
            pid,
            files: HashMap::new(),
        }
    }

    /// The function at `address` in a process with `mappings`; a return
    /// address (`is_return`) is looked up one byte back, inside the call.
    /// Unknown code is `[file name]` or `[unknown]`, as perf writes it.
    pub fn name(&mut self, mappings: &[Mapping], address: u64, is_return: bool) -> String {
        let at = if is_return {
            address.saturating_sub(1)
        } else {
            address
        };
        let Some(m) = mappings.iter().find(|m| at >= m.start && at < m.end) else {
            return "[unknown]".into();
        };
        let Some(path) = m.file() else {
            return if m.path.is_empty() {
                "[unknown]".into()
            } else {
                m.path.clone()
            };
        };
        let file_offset = at - m.start + m.offset;
        let pid = self.pid;
        let symbols = self
            .files
            .entry(path.to_string())
            .or_insert_with(|| FileSymbols::read(path, pid));
        match symbols.as_ref().and_then(|s| s.function_at(file_offset)) {
            Some(name) => name.to_string(),
            None => format!("[{}]", m.file_name().unwrap_or(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_function_of_this_process() {
        let pid = std::process::id() as i32;
        let maps = crate::procfs::read_maps(pid).unwrap();
        let mut s = Symbolizer::new(pid);
        let here = names_a_function_of_this_process as *const () as usize as u64;
        assert!(
            s.name(&maps, here, false)
                .contains("names_a_function_of_this_process"),
            "{}",
            s.name(&maps, here, false)
        );
        assert_eq!(s.name(&maps, 8, false), "[unknown]");
    }
}
