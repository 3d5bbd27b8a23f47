//! What a bpftrace map holds, read off the programs that write it.
//!
//! The kernel objects never record which aggregation a map is: bpftrace keeps
//! `hist`/`lhist`/`avg` and their parameters in its own memory, names maps
//! `AT_<name>`, and emits anonymous BTF. To export a map the way bpftrace
//! prints it (`userbpf export`), this module recognises the code bpftrace
//! 0.17–0.27 generates for each aggregation, in every program of the registry
//! that names the map:
//!
//! - **hist**: the key's last 8 bytes are a log2 bucket, computed by an
//!   inlined compare-and-shift ladder (unsigned compares against 1, 3, 15,
//!   255, 0xffff); 0.23+'s `hist(x, k)` masks with `2^k - 1`;
//! - **lhist**: the last 8 bytes are `(x - min) / step + 1`, with `min`,
//!   `max` and `step` literals (bpftrace requires them), so they appear as
//!   immediates: `jsgt x, max`, the overflow index `(max - min) / step + 1`,
//!   `div`/`rsh` by the step and `add -min`;
//! - **avg/stats**: 0.23+ keep `{total, count}` (16 bytes) and add 1 to the
//!   count at offset 8; 0.17 keeps two entries, the key's last 8 bytes being
//!   the constants 0 (count) and 1 (total);
//! - **min/max**: 0.23+ keep `{value, is_set}` and store 1 at offset 8
//!   without adding; 0.17's min stores `0xffffffff - x`;
//! - **count**: the value is incremented by the constant 1; **sum** by
//!   anything else; a non-per-CPU map is a plain value (`@x = v`).
//!
//! Whatever is not recognised is exported as a plain gauge per key, never
//! as something it might not be. Keys are split into labels from their
//! bytes ([`key_labels`]), as bpftrace's key types are not in the map.

use vm::insn::*;

/// The aggregation a map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Count,
    Sum,
    /// Log2 histogram with `2^k` buckets per power of two; the key's last
    /// 8 bytes are the bucket index.
    Hist {
        k: u32,
    },
    /// Linear histogram; the key's last 8 bytes are the bucket index.
    Lhist {
        min: i64,
        max: i64,
        step: i64,
    },
    /// avg() or stats() (the same in the map): total and count.
    /// `legacy`: bpftrace 0.17's two entries per key (suffix 0 count, 1 total).
    Avg {
        legacy: bool,
    },
    /// `legacy`: 0.17's min, stored as `0xffffffff - x` in 8 bytes.
    Min {
        legacy: bool,
    },
    Max {
        legacy: bool,
    },
    /// A plain value (`@x = v`) or anything not recognised.
    Value,
}

impl Shape {
    /// Whether the key ends with an 8-byte bucket index or 0.17's avg field.
    pub fn has_key_suffix(self) -> bool {
        matches!(
            self,
            Shape::Hist { .. } | Shape::Lhist { .. } | Shape::Avg { legacy: true }
        )
    }
}

/// What a map's writers reveal: its shape and whether it has no key of its
/// own (bpftrace's `@x`, stored under the constant key 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub shape: Shape,
    pub keyless: bool,
    /// Bit n: the key's bytes 8n..8n+8 hold (part of) a string.
    pub text_slots: u64,
}

/// The map as the exporter sees it.
pub struct MapMeta {
    pub id: u32,
    pub key_size: usize,
    pub value_size: usize,
    pub percpu: bool,
    pub max_entries: u32,
}

const HELPER_LOOKUP: i32 = 1;
const HELPER_UPDATE: i32 = 2;

/// One `bpf_map_lookup_elem`/`update_elem` call on the map.
struct Site {
    pc: usize,
    /// The key's offset from r10 (`None`: a key built elsewhere, in a
    /// scratch map value as 0.23+ do for big keys).
    key: Option<i64>,
    /// Start of the statement: just after the previous call on another map.
    window_start: usize,
}

/// Scalar knowledge of a register along the straight line (reset at every
/// jump target and call, so it is only ever what every path agrees on).
#[derive(Clone, Copy, Default)]
struct Regs {
    map: [Option<u32>; 11],
    /// `r10 + off` pointers.
    fp: [Option<i64>; 11],
    konst: [Option<i64>; 11],
}

impl Regs {
    fn clobber(&mut self, r: usize) {
        self.map[r] = None;
        self.fp[r] = None;
        self.konst[r] = None;
    }
}

fn is_alu64_k(insn: Insn, op: u8) -> bool {
    insn.opc == (BPF_ALU64 | op | BPF_K)
}

/// Recognise the shape of `map` from `programs` (each a decoded program);
/// `None` when no program writes the map.
pub fn classify(map: &MapMeta, programs: &[Vec<Insn>]) -> Option<MapShape> {
    let mut found: Option<MapShape> = None;
    for insns in programs {
        if let Some(shape) = classify_in(map, insns) {
            // Programs disagreeing (never for bpftrace, which writes a map one
            // way): the plainest reading.
            found = Some(match found {
                Some(prev) if prev != shape => MapShape {
                    shape: Shape::Value,
                    keyless: false,
                    text_slots: 0,
                },
                _ => shape,
            });
        }
    }
    found
}

fn classify_in(map: &MapMeta, insns: &[Insn]) -> Option<MapShape> {
    let targets = jump_targets(insns);
    let mut regs = Regs::default();
    let mut sites = Vec::new();
    let mut window_start = 0;
    let mut other_calls = Vec::new();
    let mut pc = 0;
    while pc < insns.len() {
        let insn = insns[pc];
        if targets[pc] {
            regs = Regs::default();
        }
        let dst = insn.dst as usize & 0xf;
        let src = insn.src as usize & 0xf;
        if insn.is_lddw() {
            regs.clobber(dst);
            if insn.src == 1 {
                regs.map[dst] = Some(insn.imm as u32);
            } else if insn.src == 0 {
                let hi = insns.get(pc + 1).map_or(0, |n| n.imm as u32 as u64);
                regs.konst[dst] = Some(((hi << 32) | insn.imm as u32 as u64) as i64);
            }
            pc += 2;
            continue;
        }
        match insn.class() {
            BPF_ALU64 if dst < 11 => match insn.opc & 0xf0 {
                BPF_MOV if insn.opc & BPF_X != 0 => {
                    let (m, f, k) = (regs.map[src], regs.fp[src], regs.konst[src]);
                    regs.clobber(dst);
                    regs.map[dst] = m;
                    regs.fp[dst] = if src == 10 { Some(0) } else { f };
                    regs.konst[dst] = k;
                }
                BPF_MOV => {
                    regs.clobber(dst);
                    regs.konst[dst] = Some(insn.imm as i64);
                }
                BPF_ADD if insn.opc & BPF_X == 0 => {
                    let f = regs.fp[dst].map(|o| o + insn.imm as i64);
                    let k = regs.konst[dst].map(|v| v.wrapping_add(insn.imm as i64));
                    regs.clobber(dst);
                    regs.fp[dst] = f;
                    regs.konst[dst] = k;
                }
                _ => regs.clobber(dst),
            },
            BPF_ALU | BPF_LDX if dst < 11 => regs.clobber(dst),
            BPF_JMP if insn.opc == (BPF_JMP | BPF_CALL) => {
                if insn.src == 0 && (insn.imm == HELPER_LOOKUP || insn.imm == HELPER_UPDATE) {
                    if regs.map[1] == Some(map.id) {
                        sites.push(Site {
                            pc,
                            key: regs.fp[2],
                            window_start,
                        });
                    }
                    // A statement on another map ends here. Other calls do not
                    // end one: `@h[comm] = hist(x)` computes the bucket before
                    // get_current_comm fills the key.
                    if regs.map[1] != Some(map.id) {
                        window_start = pc + 1;
                        other_calls.push(pc);
                    }
                }
                for r in 0..=5 {
                    regs.clobber(r);
                }
            }
            _ => {}
        }
        pc += 1;
    }
    if sites.is_empty() {
        return None;
    }
    Some(shape_from_sites(map, insns, &sites, &other_calls))
}

fn jump_targets(insns: &[Insn]) -> Vec<bool> {
    let mut targets = vec![false; insns.len() + 1];
    for (pc, insn) in insns.iter().enumerate() {
        if let Some(t) = insn.jump_target(pc) {
            if (0..targets.len() as i64).contains(&t) {
                targets[t as usize] = true;
            }
        }
    }
    targets
}

/// The register and constant stored (as a doubleword) to `[r10 + off]` in `range`, last one wins.
fn stores_to(insns: &[Insn], range: std::ops::Range<usize>, off: i64) -> Vec<(usize, Insn)> {
    insns[range.clone()]
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            (i.opc == (BPF_STX | BPF_MEM | BPF_DW) || i.opc == (BPF_ST | BPF_MEM | BPF_DW))
                && i.dst == 10
                && i.off as i64 == off
        })
        .map(|(n, i)| (range.start + n, *i))
        .collect()
}

/// The constant `reg` holds at `pc` by a `mov reg, imm` earlier in `range` with no later write.
fn constant_at(insns: &[Insn], start: usize, pc: usize, reg: u8) -> Option<i64> {
    for i in insns[start..pc].iter().rev() {
        if i.is_lddw() || i.dst != reg {
            continue;
        }
        let writes = matches!(i.class(), BPF_ALU64 | BPF_ALU | BPF_LDX);
        if !writes {
            continue;
        }
        return (i.opc == (BPF_ALU64 | BPF_MOV | BPF_K)).then_some(i.imm as i64);
    }
    None
}

fn shape_from_sites(
    map: &MapMeta,
    insns: &[Insn],
    sites: &[Site],
    other_calls: &[usize],
) -> MapShape {
    let first = &sites[0];
    let window = first.window_start..first.pc;
    let text_slots = first.key.map_or(0, |key| {
        narrow_store_slots(insns, window.clone(), key, map.key_size)
    });
    let last_pc = sites.iter().map(|s| s.pc).max().unwrap_or(first.pc);
    // The value's update: between the lookup and the (inserting) update,
    // ending before a call on another map (0.17's max keeps its update at
    // the program's end, past the next statements).
    let next_other = other_calls
        .iter()
        .copied()
        .find(|&c| c > first.pc)
        .unwrap_or(usize::MAX);
    let update = first.pc..(last_pc + 1).min(next_other);
    let part = |range: &std::ops::Range<usize>| insns[range.clone()].to_vec();
    let win = part(&window);

    // Keyless: the key (or its part before a suffix) is the constant 0.
    let keyless_if = |key_bytes: i64| -> bool {
        // bpftrace gives maps without a key of their own one entry (0.17:
        // a keyless count is a 1-entry array), hists excepted.
        if key_bytes == 0 || (map.max_entries == 1 && key_bytes == map.key_size as i64) {
            return true;
        }
        let Some(key) = first.key else { return false };
        key_bytes == 8
            && stores_to(insns, window.clone(), key)
                .last()
                .is_some_and(|&(pc, st)| {
                    if st.class() == BPF_ST {
                        st.imm == 0
                    } else {
                        constant_at(insns, 0, pc, st.src) == Some(0)
                    }
                })
    };

    if map.key_size >= 8 && map.value_size == 8 && map.percpu {
        if let Some(shape) = bucket_shape(&win) {
            return MapShape {
                shape,
                keyless: keyless_if(map.key_size as i64 - 8),
                text_slots,
            };
        }
        // 0.17's avg/stats: one statement per field, suffix 0 then 1.
        let suffixes: Vec<Option<i64>> = sites
            .iter()
            .map(|s| {
                let range = s.window_start.min(s.pc)..s.pc;
                stores_to(insns, range.clone(), s.key? + map.key_size as i64 - 8)
                    .last()
                    .and_then(|&(pc, st)| {
                        if st.class() == BPF_ST {
                            Some(st.imm as i64)
                        } else {
                            constant_at(insns, 0, pc, st.src)
                        }
                    })
            })
            .collect();
        if suffixes.contains(&Some(0))
            && suffixes.contains(&Some(1))
            && suffixes.iter().all(|s| matches!(s, Some(0 | 1)))
        {
            return MapShape {
                shape: Shape::Avg { legacy: true },
                keyless: keyless_if(map.key_size as i64 - 8),
                text_slots,
            };
        }
    }
    let upd = part(&update);
    let keyless = keyless_if(map.key_size as i64);
    if !map.percpu {
        return MapShape {
            shape: Shape::Value,
            keyless,
            text_slots,
        };
    }
    let shape = match map.value_size {
        8 => {
            let legacy_min = upd.windows(3).any(|w| {
                w[0].is_lddw()
                    && w[0].imm as u32 == 0xffff_ffff
                    && w[2].opc == (BPF_ALU64 | BPF_SUB | BPF_X)
            });
            let adds_one = upd.iter().any(|i| is_alu64_k(*i, BPF_ADD) && i.imm == 1);
            let adds_reg = upd.iter().any(|i| i.opc == (BPF_ALU64 | BPF_ADD | BPF_X));
            let compares = upd
                .iter()
                .any(|i| matches!(i.opc, 0x7d | 0x6d | 0x3d | 0x2d | 0xcd | 0xdd | 0xad | 0xbd));
            if legacy_min {
                Shape::Min { legacy: true }
            } else if adds_one && !adds_reg {
                Shape::Count
            } else if adds_reg {
                Shape::Sum
            } else if compares {
                Shape::Max { legacy: true }
            } else {
                Shape::Value
            }
        }
        16 => {
            // Count at offset 8 incremented: avg/stats; 1 stored there: min/max.
            let increments_count = upd.windows(3).any(|w| {
                w[0].opc == (BPF_LDX | BPF_MEM | BPF_DW)
                    && w[0].off == 8
                    && is_alu64_k(w[1], BPF_ADD)
                    && w[1].imm == 1
                    && w[2].opc == (BPF_STX | BPF_MEM | BPF_DW)
                    && w[2].off == 8
            });
            if increments_count {
                Shape::Avg { legacy: false }
            } else {
                min_or_max(&upd).unwrap_or(Shape::Value)
            }
        }
        _ => Shape::Value,
    };
    MapShape {
        shape,
        keyless,
        text_slots,
    }
}

/// The key's 8-byte slots (bit n: bytes 8n..8n+8) that a store narrower
/// than 8 bytes writes: parts of a string (0.23+ copy `"x"` with one
/// 2-byte store into a zeroed slot), where an integer is stored whole.
fn narrow_store_slots(
    insns: &[Insn],
    window: std::ops::Range<usize>,
    key: i64,
    key_size: usize,
) -> u64 {
    let mut slots = 0u64;
    for i in &insns[window] {
        let store = matches!(i.class(), BPF_STX | BPF_ST) && i.opc & 0xe0 == BPF_MEM && i.dst == 10;
        if !store || i.opc & 0x18 == BPF_DW {
            continue;
        }
        let at = i.off as i64 - key;
        if (0..key_size as i64).contains(&at) && at / 8 < 64 {
            slots |= 1 << (at / 8);
        }
    }
    slots
}

/// hist or lhist from the code that computes the key's bucket.
fn bucket_shape(win: &[Insn]) -> Option<Shape> {
    let ladder = [1, 3, 15, 255, 0xffff];
    let rungs = ladder
        .iter()
        .filter(|&&t| {
            win.iter()
                .any(|i| i.opc == (BPF_JMP | BPF_JGT | BPF_K) && i.imm == t)
        })
        .count();
    if rungs >= 4 {
        // hist(x, k): the fraction bits are masked with 2^k - 1 (k = 1..5).
        let k = win
            .iter()
            .filter(|i| is_alu64_k(**i, BPF_AND))
            .filter_map(|i| {
                let m = i.imm as i64 + 1;
                (m > 1 && m <= 32 && m.count_ones() == 1).then(|| m.trailing_zeros())
            })
            .max()
            .unwrap_or(0);
        return Some(Shape::Hist { k });
    }
    // lhist: max from `jsgt x, max`, the overflow index, the step, the min.
    let maxes: Vec<i64> = win
        .iter()
        .filter(|i| i.opc == (BPF_JMP | BPF_JSGT | BPF_K))
        .map(|i| i.imm as i64)
        .collect();
    let overflows: Vec<i64> = win
        .iter()
        .filter(|i| is_alu64_k(**i, BPF_MOV))
        .map(|i| i.imm as i64)
        .collect();
    let mut steps: Vec<i64> = win
        .iter()
        .filter(|i| is_alu64_k(**i, BPF_DIV) && i.imm > 0)
        .map(|i| i.imm as i64)
        .collect();
    steps.extend(
        win.iter()
            .filter(|i| is_alu64_k(**i, BPF_RSH) && (1..63).contains(&i.imm))
            .map(|i| 1i64 << i.imm),
    );
    let explicit_step = !steps.is_empty();
    steps.push(1);
    let mut mins: Vec<i64> = win
        .iter()
        .filter(|i| is_alu64_k(**i, BPF_ADD) && i.imm < 0)
        .map(|i| -(i.imm as i64))
        .collect();
    mins.extend(
        win.iter()
            .filter(|i| is_alu64_k(**i, BPF_SUB))
            .map(|i| i.imm as i64),
    );
    mins.push(0);
    let adds_one = win.iter().any(|i| is_alu64_k(*i, BPF_ADD) && i.imm == 1);
    if !adds_one && !explicit_step {
        return None;
    }
    for &max in &maxes {
        for &step in &steps {
            for &min in &mins {
                if max > min && step > 0 && overflows.contains(&((max - min) / step + 1)) {
                    return Some(Shape::Lhist { min, max, step });
                }
            }
        }
    }
    None
}

/// 0.23+'s min/max: the stored value is compared with the new one, and the
/// jump that leads to the store says which way (`cur >= x` stores for min,
/// `x >= cur` for max).
fn min_or_max(upd: &[Insn]) -> Option<Shape> {
    for (n, i) in upd.iter().enumerate() {
        // ldxdw cur, [r0+0] followed by a compare naming cur.
        if i.opc != (BPF_LDX | BPF_MEM | BPF_DW) || i.off != 0 {
            continue;
        }
        let cur = i.dst;
        let Some(cmp) = upd.get(n + 1) else { continue };
        if cmp.class() != BPF_JMP || cmp.opc & BPF_X == 0 {
            continue;
        }
        let ge = matches!(cmp.opc & 0xf0, BPF_JGE | BPF_JSGE | BPF_JGT | BPF_JSGT);
        let le = matches!(cmp.opc & 0xf0, BPF_JLE | BPF_JSLE | BPF_JLT | BPF_JSLT);
        if !(ge || le) {
            continue;
        }
        let cur_left = cmp.dst == cur;
        return Some(if ge == cur_left {
            Shape::Min { legacy: false }
        } else {
            Shape::Max { legacy: false }
        });
    }
    None
}

/// Upper bound (inclusive, for the integers bpftrace buckets) of hist bucket
/// `index`; `None` for the last (unbounded) one.
pub fn hist_upper(index: u64, k: u32) -> Option<i64> {
    let n = 1u64 << k;
    if index == 0 {
        return Some(-1); // negative values
    }
    if index <= 2 * n {
        return Some(index as i64 - 1); // one value each
    }
    let exp = (index >> k).checked_sub(1)?;
    let bound = (1u128 << exp) * (n as u128 + (index & (n - 1)) as u128);
    (bound <= i64::MAX as u128 + 1).then(|| (bound - 1) as i64)
}

/// Upper bound (inclusive) of lhist bucket `index`; `None` for the overflow bucket.
pub fn lhist_upper(index: u64, min: i64, max: i64, step: i64) -> Option<i64> {
    let buckets = ((max - min) / step) as u64;
    if index > buckets {
        return None;
    }
    Some(min + index as i64 * step - 1)
}

/// Labels for every key of a map: one list per key, all of one length;
/// keys whose parts do not line up with the others' get bpftrace's
/// printed form (`2, x`) as their one part, and so do all of them then.
pub fn map_key_labels(keys: &[Vec<u8>], text_slots: u64) -> Vec<Vec<String>> {
    let split: Vec<Vec<String>> = keys
        .iter()
        .map(|k| key_labels_with(k, text_slots))
        .collect();
    let lengths: std::collections::BTreeSet<usize> = split.iter().map(Vec::len).collect();
    if lengths.len() <= 1 {
        return split;
    }
    split
        .into_iter()
        .map(|parts| vec![parts.join(", ")])
        .collect()
}

/// Splits key bytes into label values the way bpftrace prints them: text
/// (NUL-terminated printable bytes) or integers; tuples are cut at 8-byte
/// boundaries, text running on across them.
#[cfg(test)]
pub fn key_labels(key: &[u8]) -> Vec<String> {
    key_labels_with(key, 0)
}

/// [`key_labels`], with the 8-byte slots the code writes as text known.
fn key_labels_with(key: &[u8], text_slots: u64) -> Vec<String> {
    if key.len() > 8 && key.iter().all(|&b| b == 0) {
        return vec![String::new()]; // the empty string (bpftrace prints `@x[]`)
    }
    if let Some(text) = as_text(key) {
        return vec![text];
    }
    if key.len() <= 8 {
        return vec![integer(key)];
    }
    let mut parts = Vec::new();
    let mut at = 0;
    while at < key.len() {
        let rest = &key[at..];
        let known_text = at % 8 == 0 && at / 8 < 64 && text_slots & (1 << (at / 8)) != 0;
        let text_len = if known_text {
            rest.iter()
                .take_while(|&&b| (0x20..0x7f).contains(&b))
                .count()
        } else {
            text_prefix(rest)
        };
        if text_len > 0 {
            // The text and its NUL padding: strings are fixed-size arrays
            // (comm 16, str 64), so whole zero 8-byte slots after one are
            // its padding too.
            let mut end = at + text_len;
            while end < key.len() && key[end] == 0 {
                end += 1;
            }
            if end < key.len() {
                end -= end % 8; // the next part starts at a slot boundary
                end = end.max(at + text_len + 1);
            }
            parts.push(String::from_utf8_lossy(&rest[..text_len]).into_owned());
            at = end;
        } else {
            let end = (at + 8).min(key.len());
            parts.push(integer(&key[at..end]));
            at = end;
        }
    }
    parts
}

/// Length of a printable run at the start of `bytes` that ends in a NUL (or the end), at least 2 long or followed by padding.
fn text_prefix(bytes: &[u8]) -> usize {
    let run = bytes
        .iter()
        .take_while(|&&b| (0x20..0x7f).contains(&b))
        .count();
    let terminated = run == bytes.len() || bytes[run] == 0;
    if run == 0 || !terminated {
        return 0;
    }
    // A lone printable byte followed by zeros is as likely a small integer: only text
    // when it is not at an 8-byte slot that could hold one.
    if run == 1 && bytes.len() >= 8 && bytes[1..8].iter().all(|&b| b == 0) {
        return 0;
    }
    run
}

fn as_text(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let (text, padding) = bytes.split_at(end);
    let printable = !text.is_empty() && text.iter().all(|&b| (0x20..0x7f).contains(&b));
    (printable && padding.iter().all(|&b| b == 0) && bytes.len() > 8)
        .then(|| String::from_utf8_lossy(text).into_owned())
}

/// A little-endian integer, signed as bpftrace prints its int64 keys.
fn integer(bytes: &[u8]) -> String {
    let mut word = [0u8; 8];
    word[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
    let v = u64::from_le_bytes(word);
    match bytes.len() {
        8 => (v as i64).to_string(),
        4 => (v as u32 as i32).to_string(),
        2 => (v as u16 as i16).to_string(),
        1 => (v as u8 as i8).to_string(),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_buckets_are_bpftraces() {
        // k = 0: (..,0) [0] [1] [2,4) [4,8) ...
        assert_eq!(hist_upper(0, 0), Some(-1));
        assert_eq!(hist_upper(1, 0), Some(0));
        assert_eq!(hist_upper(2, 0), Some(1));
        assert_eq!(hist_upper(3, 0), Some(3));
        assert_eq!(hist_upper(4, 0), Some(7));
        assert_eq!(hist_upper(8, 0), Some(127));
        // k = 1: two buckets per power of two: [0] [1] [2] [3] [4,6) [6,8) [8,12) ...
        assert_eq!(hist_upper(4, 1), Some(3));
        assert_eq!(hist_upper(5, 1), Some(5));
        assert_eq!(hist_upper(6, 1), Some(7));
        assert_eq!(hist_upper(7, 1), Some(11));
    }

    #[test]
    fn lhist_buckets_are_bpftraces() {
        // lhist(x, 0, 100, 10): (..,0) [0,10) ... [90,100) [100,..)
        assert_eq!(lhist_upper(0, 0, 100, 10), Some(-1));
        assert_eq!(lhist_upper(1, 0, 100, 10), Some(9));
        assert_eq!(lhist_upper(10, 0, 100, 10), Some(99));
        assert_eq!(lhist_upper(11, 0, 100, 10), None);
    }

    #[test]
    fn keys_become_labels() {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"alpha");
        assert_eq!(key_labels(&comm), ["alpha"]);
        assert_eq!(key_labels(&42u64.to_le_bytes()), ["42"]);
        assert_eq!(key_labels(&(-1i64).to_le_bytes()), ["-1"]);
        // bpftrace 0.17's (int64, "xy") tuple: 11 bytes; 0.27's: 16.
        let mut t = 2u64.to_le_bytes().to_vec();
        t.extend_from_slice(b"xy\0");
        assert_eq!(key_labels(&t), ["2", "xy"]);
        t.extend_from_slice(&[0; 5]);
        assert_eq!(key_labels(&t), ["2", "xy"]);
        // One printable byte and zeros is read as the integer it equally is
        // (`@[arg0 % 100]` is far more common than a one-letter string).
        let mut t = 2u64.to_le_bytes().to_vec();
        t.extend_from_slice(&120u64.to_le_bytes());
        assert_eq!(key_labels(&t), ["2", "120"]);
        // (comm, pid)
        let mut t = comm.to_vec();
        t.extend_from_slice(&65u64.to_le_bytes());
        assert_eq!(key_labels(&t), ["alpha", "65"]);
    }
}
