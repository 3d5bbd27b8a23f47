//! userbpf's static verifier: proves an eBPF program safe before it may run
//! inside someone else's process.
//!
//! [`verify`] runs the structural checks (`cfg`), then abstract
//! interpretation over every path (`analysis`) with kernel-style register and
//! stack-slot types (`state`, `scalar`), checking helper calls against the
//! prototype table [`HELPERS`] — the same table the runtime registers its
//! helper implementations from. Rejections carry the kernel's errno and a
//! kernel-shaped log line (`R1 invalid mem access 'scalar'`) naming the
//! instruction. See `docs/arch/verifier.md` for the design and its limits.

mod analysis;
mod cfg;
mod error;
mod helpers;
mod log;
mod maps;
mod prog_type;
mod scalar;
mod state;

use std::fmt;

use vm::insn::Insn;
pub use vm::program::PseudoLoad;

pub use error::{E2BIG, EACCES, EBADF, EINVAL};
pub use helpers::{
    helper, kfunc_by_name, kfuncs, ArgKind, HelperProto, RetKind, BPF_STRNLEN, BPF_STRNSTR, HELPERS, KFUNC_BASE,
};
pub use log::disasm;
pub use maps::{map_type, MapDesc, Maps};
pub use prog_type::ProgType;

/// The environment variable that turns safety verification off. Only the
/// structural checks run; every load prints a warning to stderr.
pub const DISABLE_ENV: &str = "USERBPF_UNSAFE_DISABLE_VERIFIER";

/// The kernel's complexity limit (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const DEFAULT_MAX_INSNS_PROCESSED: u64 = 1_000_000;

/// How to verify.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// `BPF_PROG_LOAD`'s `log_level`: 0 = no log, 1 = processed instructions,
    /// reason and statistics, 2 = also branch points.
    pub log_level: u32,
    /// The kernel's `!bpf_capable` rules: no loops, no pointer leaks into
    /// maps/helpers/return value, no pointer comparisons.
    pub unprivileged: bool,
    /// Complexity budget (processed instructions over all paths).
    pub max_insns_processed: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { log_level: 0, unprivileged: false, max_insns_processed: DEFAULT_MAX_INSNS_PROCESSED }
    }
}

/// A program proven safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Instructions processed over all explored paths.
    pub insns_processed: u64,
    /// The log for the loader's `log_buf` (empty at log_level 0).
    pub log: String,
    /// True when verification was skipped through [`DISABLE_ENV`].
    pub skipped: bool,
}

/// A program refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The kernel's errno for this rejection: `EACCES` (unsafe), `EINVAL`
    /// (malformed), `E2BIG` (too complex), `EBADF` (unknown map fd).
    pub errno: i32,
    /// Index of the instruction the reason refers to.
    pub insn: Option<usize>,
    /// The reason, in the kernel's wording (also the log's last lines).
    pub message: String,
    /// The log for the loader's `log_buf` (empty at log_level 0).
    pub log: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.insn {
            Some(pc) => write!(f, "verifier rejected the program at insn {pc}: {}", self.message),
            None => write!(f, "verifier rejected the program: {}", self.message),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Verify `insns` (map `lddw`s still naming fds) as a program of type
/// `prog_type`. `maps` describes the map behind each map `lddw`; `None` means
/// the fd is not a map.
pub fn verify(
    insns: &[Insn],
    prog_type: ProgType,
    maps: &dyn Fn(PseudoLoad) -> Option<MapDesc>,
    opts: &VerifyOptions,
) -> Result<Verdict, VerifyError> {
    verify_with_maps(insns, prog_type, &maps, opts)
}

/// [`verify`] with a [`Maps`] that can also supply the contents of frozen
/// read-only maps (libbpf's `.rodata`), which decides branches on them.
pub fn verify_with_maps(
    insns: &[Insn],
    prog_type: ProgType,
    maps: &dyn Maps,
    opts: &VerifyOptions,
) -> Result<Verdict, VerifyError> {
    let disabled = std::env::var_os(DISABLE_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    verify_inner(insns, prog_type, maps, opts, disabled)
}

fn verify_inner(
    insns: &[Insn],
    prog_type: ProgType,
    maps: &dyn Maps,
    opts: &VerifyOptions,
    disabled: bool,
) -> Result<Verdict, VerifyError> {
    let mut log = log::Log::new(opts.log_level);
    let fail = |r: error::Reject, log: log::Log, stats: &analysis::Stats| {
        VerifyError { errno: r.errno, insn: r.pc, log: log.finish(Some(&r.message), &stats_line(stats)), message: r.message }
    };
    let no_stats = analysis::Stats::default();
    let cfg = match cfg::analyze(insns, !opts.unprivileged) {
        Ok(c) => c,
        Err(r) => return Err(fail(r, log, &no_stats)),
    };
    if disabled {
        eprintln!(
            "userbpf: WARNING: {DISABLE_ENV} is set: loading a {prog_type:?} program of {} instructions WITHOUT safety verification",
            insns.len()
        );
        log.line(1, &format!("verification disabled by {DISABLE_ENV}"));
        return Ok(Verdict { insns_processed: 0, log: log.finish(None, &stats_line(&no_stats)), skipped: true });
    }
    let mut a = analysis::Analyzer::new(
        analysis::Params {
            insns,
            prog_type,
            privileged: !opts.unprivileged,
            max_insns_processed: opts.max_insns_processed,
            cfg,
        },
        log,
    );
    let result = a.resolve_maps(maps).and_then(|_| a.run());
    let stats = a.stats;
    let log = std::mem::replace(&mut a.log, log::Log::new(0));
    match result {
        Ok(()) => Ok(Verdict { insns_processed: stats.processed, log: log.finish(None, &stats_line(&stats)), skipped: false }),
        Err(r) => Err(fail(r, log, &stats)),
    }
}

/// The log's last line for a load refused before any instruction was
/// analysed (the kernel's checks of a program's BTF information, say).
pub fn nothing_processed_line() -> String {
    stats_line(&analysis::Stats::default())
}

fn stats_line(s: &analysis::Stats) -> String {
    format!(
        "processed {} insns (limit {}) max_states_per_insn {} total_states {} peak_states {} mark_read 0",
        s.processed, DEFAULT_MAX_INSNS_PROCESSED, s.max_states_per_insn, s.total_states, s.peak_states
    )
}


#[cfg(test)]
mod tests {
    use super::*;
    use vm::insn::{Insn, EXIT};

    fn no_maps(_: PseudoLoad) -> Option<MapDesc> {
        None
    }

    #[test]
    fn disabling_skips_the_safety_analysis_but_not_the_structure() {
        // Reads an uninitialised register: refused when verifying...
        let unsafe_prog = [Insn { opc: EXIT, ..Default::default() }];
        let opts = VerifyOptions { log_level: 1, ..Default::default() };
        assert!(verify_inner(&unsafe_prog, ProgType::Kprobe, &no_maps, &opts, false).is_err());
        // ...accepted, and marked as skipped, when verification is disabled.
        let v = verify_inner(&unsafe_prog, ProgType::Kprobe, &no_maps, &opts, true).unwrap();
        assert!(v.skipped);
        assert!(v.log.contains(DISABLE_ENV), "{}", v.log);
        // A structurally broken program is refused either way.
        let broken = [Insn { opc: 0xb7, ..Default::default() }];
        assert_eq!(verify_inner(&broken, ProgType::Kprobe, &no_maps, &opts, true).unwrap_err().errno, EINVAL);
    }

    #[test]
    fn log_level_zero_writes_no_log_but_keeps_the_reason() {
        let prog = [Insn { opc: EXIT, ..Default::default() }];
        let e = verify_inner(&prog, ProgType::Kprobe, &no_maps, &VerifyOptions::default(), false).unwrap_err();
        assert_eq!((e.errno, e.insn, e.message.as_str(), e.log.as_str()), (EACCES, Some(0), "R0 !read_ok", ""));
        assert_eq!(e.to_string(), "verifier rejected the program at insn 0: R0 !read_ok");
    }

    #[test]
    fn log_level_one_traces_instructions_like_the_kernel() {
        let prog = [Insn { opc: 0xb7, imm: 0, ..Default::default() }, Insn { opc: EXIT, ..Default::default() }];
        let v = verify_inner(&prog, ProgType::Kprobe, &no_maps, &VerifyOptions { log_level: 1, ..Default::default() }, false).unwrap();
        assert_eq!(
            v.log,
            "0: (b7) r0 = 0\n1: (95) exit\nprocessed 2 insns (limit 1000000) max_states_per_insn 1 total_states 1 peak_states 1 mark_read 0\n"
        );
    }

    #[test]
    fn prog_types_round_trip_kernel_numbers() {
        for n in 0..40 {
            if let Some(t) = ProgType::from_kernel(n) {
                assert_eq!(t.to_kernel(), n);
            }
        }
        assert_eq!(ProgType::Kprobe.ctx_size(), 168);
        assert!(ProgType::from_kernel(6).is_none(), "XDP is not supported");
    }
}
