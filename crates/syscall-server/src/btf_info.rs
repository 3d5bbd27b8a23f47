//! A program's BTF function and line information (`prog_btf_fd`,
//! `func_info`, `line_info` of `BPF_PROG_LOAD`): checked as the kernel's
//! `check_btf_info` checks it, kept, and reported back by
//! `OBJ_GET_INFO_BY_FD` (`btf_id`, `nr_func_info`, `nr_line_info` and the
//! records), so a loader that passes bad records gets the kernel's errno
//! and log line rather than a silent success, and one that reads them back
//! (bpftool's `prog dump` in the loader's own process) finds them.
//!
//! The records are kept in the kernel's own formats (`struct
//! bpf_func_info`, 8 bytes; `struct bpf_line_info`, 16 bytes); a loader's
//! larger records must have zeros beyond those, as in the kernel. Not
//! checked: that each record's type id names a FUNC of the BTF (userbpf
//! does not interpret the types). The information lives with the loader's
//! program object: other processes see programs by id from the registry,
//! without it.

use crate::abi::Attr;
use crate::objects::{Object, TABLE};

/// `union bpf_attr` offsets of `BPF_PROG_LOAD`'s BTF fields.
const PROG_BTF_FD: usize = 72;
const FUNC_INFO_REC_SIZE: usize = 76;
const FUNC_INFO: usize = 80;
const FUNC_INFO_CNT: usize = 88;
const LINE_INFO_REC_SIZE: usize = 92;
const LINE_INFO: usize = 96;
const LINE_INFO_CNT: usize = 104;

/// `sizeof(struct bpf_func_info)` and `sizeof(struct bpf_line_info)`.
pub const FUNC_INFO_SIZE: usize = 8;
pub const LINE_INFO_SIZE: usize = 16;
/// The kernel's `MAX_FUNCINFO_REC_SIZE` (also the line-info bound).
const MAX_REC_SIZE: u32 = 252;

/// What a program load carried, in the kernel's record formats.
#[derive(Clone, Debug, Default)]
pub struct BtfInfo {
    /// Id of the program's BTF object (0: none).
    pub btf_id: u32,
    pub func_info: Vec<u8>,
    pub line_info: Vec<u8>,
}

impl BtfInfo {
    pub fn nr_func_info(&self) -> u32 {
        (self.func_info.len() / FUNC_INFO_SIZE) as u32
    }
    pub fn nr_line_info(&self) -> u32 {
        (self.line_info.len() / LINE_INFO_SIZE) as u32
    }
}

/// A refusal: the errno and the verifier-log message, if the kernel writes
/// one (with its line end where the kernel writes one: two of its messages
/// have none).
pub type Refusal = (i32, Option<String>);

fn refuse(errno: i32, log: impl Into<String>) -> Refusal {
    (errno, Some(log.into()))
}

/// Where the program's functions start: instruction 0 and every target of
/// a BPF-to-BPF call or of a callback's `ldimm64 BPF_PSEUDO_FUNC`, as the
/// kernel's `add_subprog_and_kfunc` finds them.
fn subprog_starts(insns: &[u64]) -> Vec<u32> {
    let mut starts = vec![0u32];
    let mut pc = 0usize;
    while pc < insns.len() {
        let i = insns[pc];
        let (code, src, imm) = (i as u8, ((i >> 12) & 0xf) as u8, (i >> 32) as i32);
        let target = pc as i64 + i64::from(imm) + 1;
        if ((code == 0x85 && src == 1) || (code == 0x18 && src == 4))
            && (0..insns.len() as i64).contains(&target)
        {
            starts.push(target as u32);
        }
        pc += if code == 0x18 { 2 } else { 1 };
    }
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// The loader's `count` records of `rec_size` bytes at `ptr` (at least
/// `keep`, checked by the caller), each cut to `keep` bytes; E2BIG (with
/// the kernel's log line naming `what`) when a record has non-zero bytes
/// past `keep`.
fn records(
    ptr: u64,
    count: u32,
    rec_size: u32,
    keep: usize,
    what: &str,
) -> Result<Vec<u8>, Refusal> {
    let total = count as usize * rec_size as usize;
    // SAFETY: the loader's array of `count` records; a bad pointer is EFAULT.
    let raw = unsafe { crate::bpf::user_bytes(ptr, total) }.map_err(|e| (e, None))?;
    let mut out = Vec::with_capacity(count as usize * keep);
    for rec in raw.chunks_exact(rec_size as usize) {
        if rec[keep..].iter().any(|&b| b != 0) {
            return Err(refuse(
                libc::E2BIG,
                format!("nonzero tailing record in {what}"),
            ));
        }
        out.extend_from_slice(&rec[..keep]);
    }
    Ok(out)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// The size of the string section of a BTF blob whose header was checked
/// at `BTF_LOAD` (`str_len`, at offset 20 of `struct btf_header`).
fn string_section_len(btf: &[u8]) -> u32 {
    btf.get(20..24)
        .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
}

/// Checks and keeps the BTF information of a `PROG_LOAD` (`insns` as the
/// loader gave them). `Ok(None)`: the load carries none.
pub fn from_load(a: &Attr, insns: &[u64]) -> Result<Option<BtfInfo>, Refusal> {
    let (nfuncs, nlines) = (a.u32(FUNC_INFO_CNT), a.u32(LINE_INFO_CNT));
    if nfuncs == 0 && nlines == 0 {
        return Ok(None);
    }
    let fd = a.u32(PROG_BTF_FD) as i32;
    let btf = match TABLE.get(fd) {
        Some(obj) => match &*obj {
            Object::Btf(b) => (b.id, string_section_len(&b.data)),
            _ => return Err((libc::EINVAL, None)),
        },
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        None if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 => return Err((libc::EINVAL, None)),
        None => return Err((libc::EBADF, None)),
    };
    let starts = subprog_starts(insns);
    let mut info = BtfInfo {
        btf_id: btf.0,
        ..Default::default()
    };

    if nfuncs > 0 {
        let rec = a.u32(FUNC_INFO_REC_SIZE);
        if rec < FUNC_INFO_SIZE as u32 || rec > MAX_REC_SIZE || !rec.is_multiple_of(4) {
            return Err(refuse(
                libc::EINVAL,
                format!("invalid func info rec size {rec}\n"),
            ));
        }
        let recs = records(a.u64(FUNC_INFO), nfuncs, rec, FUNC_INFO_SIZE, "func info")?;
        let mut prev = 0;
        for (i, r) in recs.chunks_exact(FUNC_INFO_SIZE).enumerate() {
            let off = u32_at(r, 0);
            if i == 0 && off != 0 {
                return Err(refuse(
                    libc::EINVAL,
                    format!("nonzero insn_off {off} for the first func info record"),
                ));
            }
            if i > 0 && off <= prev {
                return Err(refuse(
                    libc::EINVAL,
                    format!("same or smaller insn offset ({off}) than previous func info record ({prev})"),
                ));
            }
            prev = off;
        }
        if nfuncs as usize != starts.len() {
            return Err(refuse(
                libc::EINVAL,
                "number of funcs in func_info doesn't match number of subprogs\n",
            ));
        }
        if recs
            .chunks_exact(FUNC_INFO_SIZE)
            .zip(&starts)
            .any(|(r, &s)| u32_at(r, 0) != s)
        {
            return Err(refuse(
                libc::EINVAL,
                "func_info BTF section doesn't match subprog layout in BPF program\n",
            ));
        }
        info.func_info = recs;
    }

    if nlines > 0 {
        let rec = a.u32(LINE_INFO_REC_SIZE);
        if rec < LINE_INFO_SIZE as u32 || rec > MAX_REC_SIZE || !rec.is_multiple_of(4) {
            return Err((libc::EINVAL, None));
        }
        let recs = records(a.u64(LINE_INFO), nlines, rec, LINE_INFO_SIZE, "line_info")?;
        let len = insns.len() as u32;
        let mut prev = 0;
        let mut s = 0;
        for (i, r) in recs.chunks_exact(LINE_INFO_SIZE).enumerate() {
            // struct bpf_line_info: insn_off, file_name_off, line_off, line_col.
            let (off, file, line) = (u32_at(r, 0), u32_at(r, 4), u32_at(r, 8));
            if (i > 0 && off <= prev) || off >= len {
                return Err(refuse(
                    libc::EINVAL,
                    format!("Invalid line_info[{i}].insn_off:{off} (prev_offset:{prev} prog->len:{len})\n"),
                ));
            }
            if insns[off as usize] as u8 == 0 {
                return Err(refuse(
                    libc::EINVAL,
                    format!("Invalid insn code at line_info[{i}].insn_off\n"),
                ));
            }
            if line >= btf.1 || file >= btf.1 {
                return Err(refuse(
                    libc::EINVAL,
                    format!("Invalid line_info[{i}].line_off or .file_name_off\n"),
                ));
            }
            if s < starts.len() {
                if off == starts[s] {
                    s += 1;
                } else if starts[s] < off {
                    return Err(refuse(
                        libc::EINVAL,
                        format!("missing bpf_line_info for func#{s}\n"),
                    ));
                }
            }
            prev = off;
        }
        if s != starts.len() {
            return Err(refuse(
                libc::EINVAL,
                format!(
                    "missing bpf_line_info for {} funcs starting from func#{s}\n",
                    starts.len() - s
                ),
            ));
        }
        info.line_info = recs;
    }
    Ok(Some(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, src: u8, imm: i32) -> u64 {
        u64::from(code) | u64::from(src) << 12 | u64::from(imm as u32) << 32
    }

    #[test]
    fn subprogs_start_at_zero_and_at_every_call_or_callback_target() {
        // 0: call +2 (-> 3); 1: ldimm64 func +3 (-> 5); 3: exit; 4: exit; 5: exit
        let insns = [
            insn(0x85, 1, 2),
            insn(0x18, 4, 3),
            0,
            insn(0x95, 0, 0),
            insn(0x95, 0, 0),
            insn(0x95, 0, 0),
        ];
        assert_eq!(subprog_starts(&insns), vec![0, 3, 5]);
        // A helper call (src 0) and a kfunc call (src 2) start nothing.
        assert_eq!(
            subprog_starts(&[insn(0x85, 0, 1), insn(0x85, 2, 7), insn(0x95, 0, 0)]),
            vec![0]
        );
    }
}
