//! Programs the loader runs itself: `BEGIN`/`END` (`BPF_PROG_TEST_RUN`) and
//! `interval:`/`profile:` ([`crate::timer`]), through the shared `runtime`.
//!
//! INTEGRATION POINT (temporary): the runtime's program API has not landed.

/// Size of the zeroed context a raw-tracepoint test run receives.
pub const RAW_TP_CTX_SIZE: usize = 12 * 8;

pub fn run_program(_prog_id: u32, _ctx: *mut u8) -> Result<u64, i32> {
    crate::report::unsupported("running programs in the loader", "runtime integration is pending");
    Err(crate::abi::ENOTSUPP)
}
