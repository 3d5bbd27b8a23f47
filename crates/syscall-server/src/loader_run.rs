//! Programs the loader runs itself: `BEGIN`/`END` (`BPF_PROG_TEST_RUN` of
//! raw-tracepoint programs) and `interval:`/`profile:` ([`crate::timer`]).
//!
//! INTEGRATION POINT (temporary): they run through the `runtime` crate's
//! `LoadedProgram`, which has not been committed yet; until then running a
//! program in the loader fails with ENOTSUPP and says so.

/// Size of the zeroed context a raw-tracepoint test run receives.
pub const RAW_TP_CTX_SIZE: usize = 12 * 8;

pub fn run_program(_prog_id: u32, _ctx: *mut u8) -> Result<u64, i32> {
    crate::report::unsupported("running programs in the loader (BEGIN/END, interval:)", "the runtime crate's program API is not available yet");
    Err(crate::abi::ENOTSUPP)
}

/// Drop the runnable copy of a program being released.
pub fn forget(_prog_id: u32) {}
