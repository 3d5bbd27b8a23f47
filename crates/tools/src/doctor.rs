//! `userbpf doctor`: checks the machine.

use crate::error::{exit, CliError, CliResult};

/// `userbpf doctor`.
pub fn doctor(_json: bool) -> CliResult {
    Err(CliError::with_code(exit::FAILURE, "doctor: not written yet"))
}
