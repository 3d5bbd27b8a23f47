//! The numeric abstract domain: a 64-bit value known to lie in both an
//! unsigned range `[umin, umax]` and a signed range `[smin, smax]` (the
//! kernel's bounds), with its lowest `tz` bits known to be zero (the part of
//! the kernel's tnums that alignment checks need). Transfer functions for every ALU
//! operation and the refinement a conditional jump gives each branch.
//!
//! Every function here is *sound*: the concrete result of an operation on any
//! values inside the inputs' ranges lies inside the output's range. `None`
//! from a refinement means the branch cannot be taken.

use vm::insn::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scalar {
    pub umin: u64,
    pub umax: u64,
    pub smin: i64,
    pub smax: i64,
    /// The lowest `tz` bits are known to be zero (64: the value is 0).
    pub tz: u8,
}

impl Scalar {
    pub const UNKNOWN: Scalar = Scalar { umin: 0, umax: u64::MAX, smin: i64::MIN, smax: i64::MAX, tz: 0 };

    pub const fn constant(v: u64) -> Scalar {
        Scalar { umin: v, umax: v, smin: v as i64, smax: v as i64, tz: v.trailing_zeros() as u8 }
    }

    /// Any value representable in `bytes` bytes, zero-extended.
    pub fn unsigned_bytes(bytes: u32) -> Scalar {
        if bytes >= 8 {
            Scalar::UNKNOWN
        } else {
            Scalar::urange(0, (1u64 << (bytes * 8)) - 1)
        }
    }

    /// Any value representable in `bytes` bytes, sign-extended.
    pub fn signed_bytes(bytes: u32) -> Scalar {
        if bytes >= 8 {
            Scalar::UNKNOWN
        } else {
            let half = 1i64 << (bytes * 8 - 1);
            Scalar::srange(-half, half - 1)
        }
    }

    pub fn urange(lo: u64, hi: u64) -> Scalar {
        Scalar { umin: lo, umax: hi, smin: i64::MIN, smax: i64::MAX, tz: 0 }.sync().unwrap_or(Scalar::UNKNOWN)
    }

    pub fn srange(lo: i64, hi: i64) -> Scalar {
        Scalar { umin: 0, umax: u64::MAX, smin: lo, smax: hi, tz: 0 }.sync().unwrap_or(Scalar::UNKNOWN)
    }

    pub fn as_const(&self) -> Option<u64> {
        (self.umin == self.umax).then_some(self.umin)
    }

    /// Whether every value of `other` is a value of `self`.
    pub fn contains(&self, other: &Scalar) -> bool {
        self.umin <= other.umin
            && other.umax <= self.umax
            && self.smin <= other.smin
            && other.smax <= self.smax
            && other.tz >= self.tz
    }

    /// Whether the value is a multiple of `align` (a power of two).
    pub fn is_aligned(&self, align: u64) -> bool {
        (self.tz as u32) >= align.trailing_zeros()
    }

    fn with_tz(mut self, tz: u8) -> Scalar {
        self.tz = tz.min(64);
        self
    }

    /// Tighten each range with what the other implies; `None` if empty.
    pub fn sync(mut self) -> Option<Scalar> {
        for _ in 0..2 {
            // Signed range lying in one half of the unsigned space.
            if self.smin >= 0 || self.smax < 0 {
                self.umin = self.umin.max(self.smin as u64);
                self.umax = self.umax.min(self.smax as u64);
            }
            // Unsigned range lying in one half of the signed space.
            if (self.umin as i64) <= (self.umax as i64) && (self.umax <= i64::MAX as u64 || self.umin > i64::MAX as u64) {
                self.smin = self.smin.max(self.umin as i64);
                self.smax = self.smax.min(self.umax as i64);
            }
            if self.umin > self.umax || self.smin > self.smax {
                return None;
            }
        }
        if self.umin == self.umax {
            self.tz = self.tz.max(self.umin.trailing_zeros() as u8);
        }
        Some(self)
    }

    fn norm(self) -> Scalar {
        self.sync().unwrap_or(Scalar::UNKNOWN)
    }

    /// The low 32 bits, zero-extended.
    pub fn low32(self) -> Scalar {
        if self.umax <= u32::MAX as u64 {
            self
        } else if let Some(c) = self.as_const() {
            Scalar::constant(c as u32 as u64)
        } else if self.umax - self.umin <= u32::MAX as u64 && (self.umin >> 32) == (self.umax >> 32) {
            Scalar::urange(self.umin as u32 as u64, self.umax as u32 as u64).with_tz(self.tz)
        } else {
            Scalar::unsigned_bytes(4).with_tz(self.tz)
        }
    }

    pub fn add(self, b: Scalar) -> Scalar {
        let mut r = Scalar::UNKNOWN;
        if let (Some(lo), Some(hi)) = (self.umin.checked_add(b.umin), self.umax.checked_add(b.umax)) {
            r.umin = lo;
            r.umax = hi;
        }
        if let (Some(lo), Some(hi)) = (self.smin.checked_add(b.smin), self.smax.checked_add(b.smax)) {
            r.smin = lo;
            r.smax = hi;
        }
        r.tz = self.tz.min(b.tz);
        r.norm()
    }

    pub fn sub(self, b: Scalar) -> Scalar {
        let mut r = Scalar::UNKNOWN;
        if self.umin >= b.umax {
            r.umin = self.umin - b.umax;
            r.umax = self.umax - b.umin;
        }
        if let (Some(lo), Some(hi)) = (self.smin.checked_sub(b.smax), self.smax.checked_sub(b.smin)) {
            r.smin = lo;
            r.smax = hi;
        }
        r.tz = self.tz.min(b.tz);
        r.norm()
    }

    /// The operation `op` (a `BPF_*` ALU code) on 64-bit operands; `None`
    /// means "no information" is not possible here: every op returns a range.
    fn alu64(self, op: u8, b: Scalar, signed_variant: bool) -> Scalar {
        if let (Some(x), Some(y)) = (self.as_const(), b.as_const()) {
            if let Some(v) = eval_alu(op, true, signed_variant, x, y) {
                return Scalar::constant(v);
            }
        }
        let tz = match op {
            BPF_ADD | BPF_SUB | BPF_OR | BPF_XOR => self.tz.min(b.tz),
            BPF_MUL => self.tz.saturating_add(b.tz),
            BPF_AND => self.tz.max(b.tz),
            BPF_LSH => match b.as_const() {
                Some(k) if k < 64 => self.tz.saturating_add(k as u8),
                _ => 0,
            },
            BPF_RSH | BPF_ARSH => match b.as_const() {
                Some(k) if k < 64 => self.tz.saturating_sub(k as u8),
                _ => 0,
            },
            _ => 0,
        };
        let r = match op {
            BPF_ADD => self.add(b),
            BPF_SUB => self.sub(b),
            BPF_MUL => {
                if self.umax <= u32::MAX as u64 && b.umax <= u32::MAX as u64 {
                    Scalar::urange(self.umin * b.umin, self.umax * b.umax)
                } else {
                    Scalar::UNKNOWN
                }
            }
            BPF_DIV if !signed_variant => {
                if b.umin > 0 {
                    Scalar::urange(self.umin / b.umax, self.umax / b.umin)
                } else {
                    Scalar::urange(0, self.umax)
                }
            }
            BPF_MOD if !signed_variant => {
                if b.umin > 0 {
                    Scalar::urange(0, self.umax.min(b.umax - 1))
                } else {
                    Scalar::urange(0, self.umax)
                }
            }
            BPF_AND => Scalar::urange(0, self.umax.min(b.umax)),
            BPF_OR => Scalar::urange(self.umin.max(b.umin), fill_bits(self.umax | b.umax)),
            BPF_XOR => Scalar::urange(0, fill_bits(self.umax | b.umax)),
            BPF_LSH => match b.as_const() {
                Some(k) if k < 64 && self.umax <= u64::MAX >> k => Scalar::urange(self.umin << k, self.umax << k),
                _ => Scalar::UNKNOWN,
            },
            BPF_RSH => {
                if b.umax < 64 {
                    Scalar::urange(self.umin >> b.umax, self.umax >> b.umin)
                } else {
                    Scalar::UNKNOWN
                }
            }
            BPF_ARSH => {
                if b.umax < 64 {
                    let (lo, hi) = (b.umin as u32, b.umax as u32);
                    let smin = (self.smin >> lo).min(self.smin >> hi);
                    let smax = (self.smax >> lo).max(self.smax >> hi);
                    Scalar::srange(smin, smax)
                } else {
                    Scalar::UNKNOWN
                }
            }
            _ => Scalar::UNKNOWN,
        };
        r.with_tz(tz)
    }

    /// Result of the ALU operation `op` (class ALU when `!is64`). `signed_variant`
    /// is the v4 `off == 1` form of div/mod.
    pub fn alu(self, op: u8, b: Scalar, is64: bool, signed_variant: bool) -> Scalar {
        if is64 {
            return self.alu64(op, b, signed_variant);
        }
        let (a32, b32) = (self.low32(), b.low32());
        if let (Some(x), Some(y)) = (a32.as_const(), b32.as_const()) {
            if let Some(v) = eval_alu(op, false, signed_variant, x, y) {
                return Scalar::constant(v);
            }
        }
        let r = match op {
            // Shifts are taken modulo 32 in ALU32; arithmetic shift needs the sign bit of bit 31.
            BPF_LSH | BPF_RSH => match b32.as_const() {
                Some(k) if k < 32 => a32.alu64(op, b32, false),
                _ => return Scalar::unsigned_bytes(4),
            },
            BPF_ARSH => {
                if a32.umax <= i32::MAX as u64 && b32.umax < 32 {
                    a32.alu64(BPF_RSH, b32, false)
                } else {
                    return Scalar::unsigned_bytes(4);
                }
            }
            _ if signed_variant => return Scalar::unsigned_bytes(4),
            _ => a32.alu64(op, b32, false),
        };
        // A result that may have left the 32-bit range wrapped around (its
        // low bits are still right).
        if r.umax <= u32::MAX as u64 {
            r
        } else {
            Scalar::unsigned_bytes(4).with_tz(r.tz)
        }
    }

    pub fn neg(self, is64: bool) -> Scalar {
        let a = if is64 { self } else { self.low32() };
        if let Some(c) = a.as_const() {
            return Scalar::constant(if is64 { c.wrapping_neg() } else { (c as u32).wrapping_neg() as u64 });
        }
        if is64 && self.smin != i64::MIN {
            Scalar::srange(-self.smax, -self.smin).with_tz(self.tz)
        } else if is64 {
            Scalar::UNKNOWN
        } else {
            Scalar::unsigned_bytes(4)
        }
    }
}

/// Smallest all-ones mask covering `v`.
fn fill_bits(v: u64) -> u64 {
    if v == 0 {
        0
    } else {
        u64::MAX >> v.leading_zeros()
    }
}

/// Concrete semantics of an ALU operation (the interpreter's), used to fold
/// constants. `None` for operations this does not evaluate (mov, neg, end).
pub fn eval_alu(op: u8, is64: bool, signed_variant: bool, x: u64, y: u64) -> Option<u64> {
    if is64 {
        Some(match op {
            BPF_ADD => x.wrapping_add(y),
            BPF_SUB => x.wrapping_sub(y),
            BPF_MUL => x.wrapping_mul(y),
            BPF_DIV if signed_variant => {
                if y == 0 { 0 } else { (x as i64).wrapping_div(y as i64) as u64 }
            }
            BPF_DIV => x.checked_div(y).unwrap_or(0),
            BPF_MOD if signed_variant => {
                if y == 0 { x } else { (x as i64).wrapping_rem(y as i64) as u64 }
            }
            BPF_MOD => {
                if y == 0 { x } else { x % y }
            }
            BPF_OR => x | y,
            BPF_AND => x & y,
            BPF_XOR => x ^ y,
            BPF_LSH => x.wrapping_shl((y & 63) as u32),
            BPF_RSH => x.wrapping_shr((y & 63) as u32),
            BPF_ARSH => ((x as i64).wrapping_shr((y & 63) as u32)) as u64,
            _ => return None,
        })
    } else {
        let (x, y) = (x as u32, y as u32);
        Some(match op {
            BPF_ADD => x.wrapping_add(y),
            BPF_SUB => x.wrapping_sub(y),
            BPF_MUL => x.wrapping_mul(y),
            BPF_DIV if signed_variant => {
                if y == 0 { 0 } else { (x as i32).wrapping_div(y as i32) as u32 }
            }
            BPF_DIV => x.checked_div(y).unwrap_or(0),
            BPF_MOD if signed_variant => {
                if y == 0 { x } else { (x as i32).wrapping_rem(y as i32) as u32 }
            }
            BPF_MOD => {
                if y == 0 { x } else { x % y }
            }
            BPF_OR => x | y,
            BPF_AND => x & y,
            BPF_XOR => x ^ y,
            BPF_LSH => x.wrapping_shl(y & 31),
            BPF_RSH => x.wrapping_shr(y & 31),
            BPF_ARSH => ((x as i32).wrapping_shr(y & 31)) as u32,
            _ => return None,
        } as u64)
    }
}

/// Refine `(a, b)` for the outcome `taken` of `if a <op> b` (64-bit compare).
/// Returns `None` when that outcome is impossible.
pub fn refine(op: u8, a: Scalar, b: Scalar, taken: bool) -> Option<(Scalar, Scalar)> {
    // Express every comparison as "holds" of a canonical relation.
    let (op, holds) = match (op, taken) {
        (BPF_JNE, t) => (BPF_JEQ, !t),
        (BPF_JLT, t) => return refine(BPF_JGT, b, a, t).map(|(x, y)| (y, x)),
        (BPF_JLE, t) => return refine(BPF_JGE, b, a, t).map(|(x, y)| (y, x)),
        (BPF_JSLT, t) => return refine(BPF_JSGT, b, a, t).map(|(x, y)| (y, x)),
        (BPF_JSLE, t) => return refine(BPF_JSGE, b, a, t).map(|(x, y)| (y, x)),
        (op, t) => (op, t),
    };
    let (mut a, mut b) = (a, b);
    match (op, holds) {
        (BPF_JEQ, true) => {
            let m = Scalar {
                umin: a.umin.max(b.umin),
                umax: a.umax.min(b.umax),
                smin: a.smin.max(b.smin),
                smax: a.smax.min(b.smax),
                tz: a.tz.max(b.tz),
            }
            .sync()?;
            return Some((m, m));
        }
        (BPF_JEQ, false) => {
            if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
                return (x != y).then_some((a, b));
            }
            if let Some(k) = b.as_const() {
                a = exclude(a, k)?;
            }
            if let Some(k) = a.as_const() {
                b = exclude(b, k)?;
            }
        }
        // a > b
        (BPF_JGT, true) => {
            a.umin = a.umin.max(b.umin.checked_add(1)?);
            b.umax = b.umax.min(a.umax.checked_sub(1)?);
        }
        // a <= b
        (BPF_JGT, false) => {
            a.umax = a.umax.min(b.umax);
            b.umin = b.umin.max(a.umin);
        }
        // a >= b
        (BPF_JGE, true) => {
            a.umin = a.umin.max(b.umin);
            b.umax = b.umax.min(a.umax);
        }
        // a < b
        (BPF_JGE, false) => {
            a.umax = a.umax.min(b.umax.checked_sub(1)?);
            b.umin = b.umin.max(a.umin.checked_add(1)?);
        }
        (BPF_JSGT, true) => {
            a.smin = a.smin.max(b.smin.checked_add(1)?);
            b.smax = b.smax.min(a.smax.checked_sub(1)?);
        }
        (BPF_JSGT, false) => {
            a.smax = a.smax.min(b.smax);
            b.smin = b.smin.max(a.smin);
        }
        (BPF_JSGE, true) => {
            a.smin = a.smin.max(b.smin);
            b.smax = b.smax.min(a.smax);
        }
        (BPF_JSGE, false) => {
            a.smax = a.smax.min(b.smax.checked_sub(1)?);
            b.smin = b.smin.max(a.smin.checked_add(1)?);
        }
        (BPF_JSET, t) => {
            if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
                return ((x & y != 0) == t).then_some((a, b));
            }
            if t && (a.umax == 0 || b.umax == 0) {
                return None;
            }
        }
        _ => {}
    }
    Some((a.sync()?, b.sync()?))
}

/// `a` without the single value `k`, where that shrinks a range end.
fn exclude(mut a: Scalar, k: u64) -> Option<Scalar> {
    if a.as_const() == Some(k) {
        return None;
    }
    if a.umin == k {
        a.umin += 1;
    } else if a.umax == k {
        a.umax -= 1;
    }
    if a.smin == k as i64 {
        a.smin += 1;
    } else if a.smax == k as i64 {
        a.smax -= 1;
    }
    a.sync()
}

/// Refinement for a 32-bit compare (`BPF_JMP32`). Precise when both operands
/// are known to fit the compared domain; otherwise only constant outcomes are
/// decided and no range is narrowed.
pub fn refine32(op: u8, a: Scalar, b: Scalar, taken: bool) -> Option<(Scalar, Scalar)> {
    let signed = matches!(op, BPF_JSGT | BPF_JSGE | BPF_JSLT | BPF_JSLE);
    let fits = |s: &Scalar| {
        if signed {
            s.smin >= 0 && s.smax <= i32::MAX as i64
        } else {
            s.umax <= u32::MAX as u64
        }
    };
    if fits(&a) && fits(&b) {
        return refine(op, a, b, taken);
    }
    let (a32, b32) = (a.low32(), b.low32());
    if let (Some(x), Some(y)) = (a32.as_const(), b32.as_const()) {
        let (xs, ys) = (x as u32 as i32 as i64, y as u32 as i32 as i64);
        let holds = match op {
            BPF_JEQ => x == y,
            BPF_JNE => x != y,
            BPF_JGT => x > y,
            BPF_JGE => x >= y,
            BPF_JLT => x < y,
            BPF_JLE => x <= y,
            BPF_JSGT => xs > ys,
            BPF_JSGE => xs >= ys,
            BPF_JSLT => xs < ys,
            BPF_JSLE => xs <= ys,
            BPF_JSET => x & y != 0,
            _ => return Some((a, b)),
        };
        return (holds == taken).then_some((a, b));
    }
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn each_value(s: Scalar) -> Vec<u64> {
        let mut v = vec![s.umin, s.umax, s.smin as u64, s.smax as u64];
        v.retain(|x| s.umin <= *x && *x <= s.umax && s.smin <= *x as i64 && *x as i64 <= s.smax);
        v.retain(|x| s.tz >= 64 || x & ((1u64 << s.tz) - 1) == 0);
        v
    }

    #[test]
    fn ops_are_sound_on_samples() {
        let samples = [
            Scalar::constant(0),
            Scalar::constant(7),
            Scalar::urange(0, 255),
            Scalar::urange(3, 100),
            Scalar::srange(-5, 5),
            Scalar::UNKNOWN,
            Scalar::urange(u64::MAX - 3, u64::MAX),
            Scalar::unsigned_bytes(4),
            Scalar::urange(0, 96).with_tz(2),
            Scalar::constant(48),
        ];
        let ops = [BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_MOD, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH, BPF_ARSH];
        for a in samples {
            for b in samples {
                for op in ops {
                    for is64 in [true, false] {
                        let r = a.alu(op, b, is64, false);
                        for x in each_value(a) {
                            for y in each_value(b) {
                                let v = eval_alu(op, is64, false, x, y).unwrap();
                                let in_r = r.umin <= v
                                    && v <= r.umax
                                    && r.smin <= v as i64
                                    && v as i64 <= r.smax
                                    && (r.tz >= 64 || v & ((1u64 << r.tz) - 1) == 0);
                                assert!(in_r, "op {op:#x} is64 {is64}: {a:?} {b:?} x={x} y={y} v={v} r={r:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn branch_refinement() {
        let a = Scalar::urange(0, 1000);
        let (t, _) = refine(BPF_JGT, a, Scalar::constant(10), false).unwrap();
        assert_eq!((t.umin, t.umax), (0, 10));
        let (t, _) = refine(BPF_JLT, a, Scalar::constant(10), true).unwrap();
        assert_eq!((t.umin, t.umax), (0, 9));
        assert!(refine(BPF_JEQ, Scalar::constant(1), Scalar::constant(2), true).is_none());
        assert!(refine(BPF_JNE, Scalar::constant(2), Scalar::constant(2), true).is_none());
        let (t, _) = refine(BPF_JSGE, Scalar::UNKNOWN, Scalar::constant(0), true).unwrap();
        assert_eq!((t.smin, t.umax), (0, i64::MAX as u64));
    }
}
