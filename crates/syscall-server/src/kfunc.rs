//! Kernel-function (kfunc) references in a loader's program, resolved the
//! way the kernel resolves them and rewritten into userbpf's own ids.
//!
//! A loader calls a kfunc by the BTF id of the function in the running
//! kernel's BTF: libbpf looks the name up in `/sys/kernel/btf/vmlinux` and
//! writes `call` with `src_reg = BPF_PSEUDO_KFUNC_CALL`, `imm` = that id,
//! and for `if (bpf_strnlen)`-style existence checks of weak kfuncs an
//! `ldimm64` with `src_reg = BPF_PSEUDO_BTF_ID`. Those ids mean nothing to
//! the traced apps, so here, at load time, each one is looked up by name
//! in the same BTF and rewritten: the call into an ordinary helper call to
//! the kfunc's id in `verifier::HELPERS` (see `verifier::KFUNC_BASE`), the
//! existence check into the constant 1 (the kernel loads the function's
//! address: non-null). The verifier, registry and agents then see one
//! calling convention.
//!
//! A kfunc userbpf does not offer, or one of a kernel module (`off` ≠ 0,
//! BTF from `fd_array`), is refused with EINVAL and a log line naming it,
//! as a kernel refuses a kfunc a program type may not call. The vmlinux
//! BTF is parsed (aya-obj) only by a loader whose program uses a kfunc.

use std::sync::OnceLock;

use aya_obj::btf::{Btf, BtfKind};

const CALL: u8 = 0x85;
const LD_IMM64: u8 = 0x18;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const BPF_PSEUDO_BTF_ID: u8 = 3;
/// Where the kernel publishes its BTF.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// `(vmlinux BTF id, userbpf id)` of every kfunc userbpf offers that the
/// running kernel's BTF names; `Err` says why there is no table.
fn table() -> &'static Result<Vec<(u32, u32)>, String> {
    static TABLE: OnceLock<Result<Vec<(u32, u32)>, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let data =
            std::fs::read(VMLINUX_BTF).map_err(|e| format!("cannot read {VMLINUX_BTF}: {e}"))?;
        let btf = Btf::parse(&data, object::Endianness::default())
            .map_err(|e| format!("cannot parse {VMLINUX_BTF}: {e}"))?;
        Ok(verifier::kfuncs()
            .filter_map(|k| {
                btf.id_by_type_name_kind(k.name, BtfKind::Func)
                    .ok()
                    .map(|id| (id, k.id))
            })
            .collect())
    })
}

fn userbpf_id(btf_id: u32) -> Result<Option<u32>, String> {
    match table() {
        Ok(t) => Ok(t.iter().find(|(b, _)| *b == btf_id).map(|(_, u)| *u)),
        Err(why) => Err(why.clone()),
    }
}

fn offered() -> String {
    verifier::kfuncs()
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rewrites the kfunc references in `insns` (raw 8-byte instructions);
/// `Err` is the verifier-log line for a reference that cannot be served.
pub fn resolve(insns: &mut [u64]) -> Result<(), String> {
    let mut pc = 0;
    while pc < insns.len() {
        let insn = insns[pc];
        let (code, src, off, imm) = (
            insn as u8,
            ((insn >> 12) & 0xf) as u8,
            (insn >> 16) as u16 as i16,
            (insn >> 32) as u32,
        );
        if code == CALL && src == BPF_PSEUDO_KFUNC_CALL {
            if off != 0 {
                return Err(format!(
                    "{pc}: calling kernel module functions (BTF from fd_array) is not supported by userbpf; it offers {}",
                    offered()
                ));
            }
            let Some(id) =
                userbpf_id(imm).map_err(|why| format!("{pc}: kernel function call: {why}"))?
            else {
                return Err(format!(
                    "{pc}: calling kernel function with BTF id {imm} is not supported by userbpf; it offers {}",
                    offered()
                ));
            };
            // src_reg 0, imm = the helper id; opcode, dst and off stay.
            insns[pc] = (insn & 0x0000_0000_ffff_0fff) | (u64::from(id) << 32);
        } else if code == LD_IMM64 && src == BPF_PSEUDO_BTF_ID && pc + 1 < insns.len() {
            // Only kfunc existence checks: kernel variables stay for the
            // verifier to refuse by name of the feature.
            if let Ok(Some(_)) = userbpf_id(imm) {
                insns[pc] = (insn & 0x0000_0000_ffff_0fff) | (1u64 << 32);
                insns[pc + 1] &= 0x0000_0000_ffff_ffff;
            }
        }
        pc += if code == LD_IMM64 { 2 } else { 1 };
    }
    Ok(())
}
