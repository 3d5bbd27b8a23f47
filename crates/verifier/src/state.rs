//! The abstract machine state the verifier tracks along one path: the type of
//! every register (scalar range, or pointer kind with an offset range), every
//! 8-byte stack slot of every call frame, and the references (ring buffer
//! reservations) the path holds. Also the subsumption test used for state
//! pruning and loop detection.

use crate::scalar::Scalar;

/// What a register (or spilled stack slot) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Never written on this path; reading it is an error.
    NotInit,
    /// A number; `Reg::value` is its range.
    Scalar,
    /// The program context (r1 at entry).
    Ctx,
    /// Pointer into the stack of call frame `frame` (0 = main program).
    Stack { frame: u8 },
    /// A map (the result of `lddw` with a map pseudo source).
    MapPtr { map: u16 },
    /// Pointer into a value of map `map`.
    MapValue { map: u16 },
    /// A map lookup's result before its NULL check.
    MapValueOrNull { map: u16 },
    /// Pointer into a key of map `map` (callback argument of `for_each_map_elem`).
    MapKey { map: u16 },
    /// Helper-allocated memory of `size` bytes (ring buffer reservation).
    Mem { size: u32 },
    /// `ringbuf_reserve`'s result before its NULL check.
    MemOrNull { size: u32 },
    /// A BPF function (`lddw` with `BPF_PSEUDO_FUNC`), usable as a callback.
    Func { pc: u32 },
}

impl Kind {
    /// The kernel's name for the type, as printed in verifier messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::NotInit => "?",
            Kind::Scalar => "scalar",
            Kind::Ctx => "ctx",
            Kind::Stack { .. } => "fp",
            Kind::MapPtr { .. } => "map_ptr",
            Kind::MapValue { .. } => "map_value",
            Kind::MapValueOrNull { .. } => "map_value_or_null",
            Kind::MapKey { .. } => "map_key",
            Kind::Mem { .. } => "ringbuf_mem",
            Kind::MemOrNull { .. } => "ringbuf_mem_or_null",
            Kind::Func { .. } => "func",
        }
    }

    pub fn is_pointer(self) -> bool {
        !matches!(self, Kind::NotInit | Kind::Scalar)
    }

    /// Pointer kinds that may be NULL until checked.
    pub fn is_or_null(self) -> bool {
        matches!(self, Kind::MapValueOrNull { .. } | Kind::MemOrNull { .. })
    }
}

/// One register's abstract value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reg {
    pub kind: Kind,
    /// For scalars the value; for pointers the offset from the object's start.
    pub value: Scalar,
    /// Links copies: registers with the same non-zero id hold the same value
    /// (scalars: bounds learnt on one apply to all; or-null pointers: one NULL
    /// check resolves all; ring buffer memory: the reference it belongs to).
    pub id: u32,
}

impl Reg {
    pub const NOT_INIT: Reg = Reg { kind: Kind::NotInit, value: Scalar::UNKNOWN, id: 0 };

    pub fn scalar(value: Scalar) -> Reg {
        Reg { kind: Kind::Scalar, value, id: 0 }
    }

    pub fn unknown() -> Reg {
        Reg::scalar(Scalar::UNKNOWN)
    }

    pub fn pointer(kind: Kind, off: i64) -> Reg {
        Reg { kind, value: Scalar::constant(off as u64), id: 0 }
    }

    /// A pointer's offset when it is a single known value.
    pub fn const_off(&self) -> Option<i64> {
        self.value.as_const().map(|v| v as i64)
    }

    /// Is this the known constant `v`?
    pub fn is_const(&self, v: u64) -> bool {
        self.kind == Kind::Scalar && self.value.as_const() == Some(v)
    }
}

/// One 8-byte stack slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// A whole register stored with an aligned 8-byte write.
    Spill(Reg),
    /// Bytes written by narrower stores or helpers: bit i set = byte i initialised
    /// (byte 0 is the lowest address of the slot). `Misc(0)` is untouched stack.
    Misc(u8),
}

pub const SLOT_INVALID: Slot = Slot::Misc(0);

/// One call frame: registers and stack of a (sub)program invocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub regs: [Reg; 11],
    /// `stack[i]` covers bytes `[-8*(i+1), -8*i)` from the frame pointer;
    /// slots past the end are untouched.
    pub stack: Vec<Slot>,
    /// Instruction to continue at in the caller when this frame exits.
    pub return_pc: usize,
    /// First instruction of the function this frame runs.
    pub func_start: usize,
    /// For callback frames (`bpf_loop`, `for_each_map_elem`): the arguments
    /// to invoke the callback with again on its next iteration.
    pub callback: Option<[Reg; 5]>,
}

impl Frame {
    pub fn new(func_start: usize, return_pc: usize, frame_no: u8) -> Frame {
        let mut regs = [Reg::NOT_INIT; 11];
        regs[10] = Reg::pointer(Kind::Stack { frame: frame_no }, 0);
        Frame { regs, stack: Vec::new(), return_pc, func_start, callback: None }
    }

    pub fn slot(&self, i: usize) -> Slot {
        self.stack.get(i).copied().unwrap_or(SLOT_INVALID)
    }

    pub fn slot_mut(&mut self, i: usize) -> &mut Slot {
        if self.stack.len() <= i {
            self.stack.resize(i + 1, SLOT_INVALID);
        }
        &mut self.stack[i]
    }
}

/// An acquired reference that must be released before exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    pub id: u32,
    /// Instruction that acquired it (for the error message).
    pub pc: usize,
}

/// The full abstract state of one path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub pc: usize,
    pub frames: Vec<Frame>,
    pub refs: Vec<Reference>,
}

impl State {
    pub fn cur(&self) -> &Frame {
        self.frames.last().expect("a state always has a frame")
    }

    pub fn cur_mut(&mut self) -> &mut Frame {
        self.frames.last_mut().expect("a state always has a frame")
    }

    pub fn frame_no(&self) -> u8 {
        (self.frames.len() - 1) as u8
    }

    /// Apply `f` to every register and spilled register of every frame.
    pub fn for_each_reg(&mut self, mut f: impl FnMut(&mut Reg)) {
        for fr in &mut self.frames {
            for r in &mut fr.regs {
                f(r);
            }
            for s in &mut fr.stack {
                if let Slot::Spill(r) = s {
                    f(r);
                }
            }
        }
    }

    /// Whether everything `new` can do, `self` was already shown to do safely:
    /// `self` is at least as general. `live` lists the registers of the
    /// innermost frame that may be read later (others are ignored). With
    /// `exact`, ranges must be equal rather than contained (loop detection).
    pub fn covers(&self, new: &State, live: u16, exact: bool) -> bool {
        if self.frames.len() != new.frames.len() || self.refs.len() != new.refs.len() {
            return false;
        }
        let mut ids = IdMap::default();
        let last = self.frames.len() - 1;
        for (i, (a, b)) in self.frames.iter().zip(&new.frames).enumerate() {
            if a.return_pc != b.return_pc || a.func_start != b.func_start || a.callback.is_some() != b.callback.is_some() {
                return false;
            }
            if let (Some(ca), Some(cb)) = (&a.callback, &b.callback) {
                if !ca.iter().zip(cb).all(|(x, y)| reg_covers(x, y, exact, &mut ids)) {
                    return false;
                }
            }
            for r in 0..11 {
                if i == last && live & (1 << r) == 0 {
                    continue;
                }
                if !reg_covers(&a.regs[r], &b.regs[r], exact, &mut ids) {
                    return false;
                }
            }
            let n = a.stack.len().max(b.stack.len());
            for s in 0..n {
                if !slot_covers(&a.slot(s), &b.slot(s), exact, &mut ids) {
                    return false;
                }
            }
        }
        self.refs.iter().zip(&new.refs).all(|(a, b)| ids.link(a.id, b.id))
    }
}

/// A consistent renaming of ids between an old and a new state (a handful
/// of pairs at most: a linear scan beats hashing, and nothing is allocated
/// until the first pair).
#[derive(Default)]
struct IdMap {
    pairs: Vec<(u32, u32)>,
}

impl IdMap {
    fn link(&mut self, old: u32, new: u32) -> bool {
        if old == 0 {
            return true;
        }
        if new == 0 {
            return false;
        }
        match self.pairs.iter().find(|(o, n)| *o == old || *n == new) {
            Some(&(o, n)) => o == old && n == new,
            None => {
                self.pairs.push((old, new));
                true
            }
        }
    }
}

fn reg_covers(old: &Reg, new: &Reg, exact: bool, ids: &mut IdMap) -> bool {
    if exact {
        return old.kind == new.kind && old.value == new.value && ids.link(old.id, new.id);
    }
    match old.kind {
        // The old path never read it, so whatever the new path holds is fine.
        Kind::NotInit => true,
        _ => old.kind == new.kind && old.value.contains(&new.value) && ids.link(old.id, new.id),
    }
}

fn slot_covers(old: &Slot, new: &Slot, exact: bool, ids: &mut IdMap) -> bool {
    if exact {
        return match (old, new) {
            (Slot::Spill(a), Slot::Spill(b)) => reg_covers(a, b, true, ids),
            (a, b) => a == b,
        };
    }
    match (old, new) {
        (Slot::Misc(0), _) => true,
        (Slot::Misc(m), Slot::Misc(n)) => m & n == *m,
        // Bytes the old path read as plain data; a spilled scalar reads the same.
        (Slot::Misc(_), Slot::Spill(r)) => r.kind == Kind::Scalar,
        (Slot::Spill(a), Slot::Spill(b)) => reg_covers(a, b, false, ids),
        (Slot::Spill(_), Slot::Misc(_)) => false,
    }
}
