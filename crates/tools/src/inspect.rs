//! `userbpf list`, `userbpf map dump`, `userbpf prog dump`: reading the
//! registry (maps, programs, attachments, processes) and printing it.

use crate::error::{exit, CliError, CliResult};

fn registry_api_missing(what: &str) -> CliError {
    CliError::with_code(
        exit::ENVIRONMENT,
        format!("{what} is not available in this build: it needs the registry listing API of the shm-maps crate (issue 3)"),
    )
}

/// `userbpf list`.
pub fn list(_json: bool) -> CliResult {
    Err(registry_api_missing("`userbpf list`"))
}

/// `userbpf map dump`.
pub fn map_dump(_map: &str, _json: bool) -> CliResult {
    Err(registry_api_missing("`userbpf map dump`"))
}

/// `userbpf prog dump`.
pub fn prog_dump(_id: u32, _json: bool) -> CliResult {
    Err(registry_api_missing("`userbpf prog dump`"))
}
