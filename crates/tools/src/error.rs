//! The one error type every command returns, and the exit codes it maps to.
//!
//! A failure is shown as a single line (`userbpf: <message>`) optionally
//! followed by one `hint:` line saying what to do about it. Nothing in the
//! command line panics on bad input: every fallible step converts its error
//! into a [`CliError`] with a message naming what failed.

use std::fmt;

/// Exit codes with a meaning, documented in `userbpf --help`.
pub mod exit {
    /// The command did what was asked.
    pub const OK: i32 = 0;
    /// A generic failure (the message says which).
    pub const FAILURE: i32 = 1;
    /// Bad usage: unknown option, missing argument (clap also uses 2).
    pub const USAGE: i32 = 2;
    /// The environment is missing something (a library, permission, kernel
    /// feature); `doctor` explains it.
    pub const ENVIRONMENT: i32 = 3;
    /// The process, map or program named on the command line does not exist.
    pub const NOT_FOUND: i32 = 4;
    /// `doctor` found at least one problem.
    pub const DOCTOR_PROBLEMS: i32 = 5;
    /// A bug in userbpf (a panic), reported as one line (sysexits' EX_SOFTWARE).
    pub const INTERNAL: i32 = 70;
    /// The command to run was found but could not be executed (shell convention).
    pub const CANNOT_EXECUTE: i32 = 126;
    /// The command to run was not found (shell convention).
    pub const COMMAND_NOT_FOUND: i32 = 127;
}

/// A failure to report to the user: one line, an optional hint, an exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub hint: Option<String>,
    pub code: i32,
}

impl CliError {
    /// A generic failure (exit code 1).
    pub fn new(message: impl Into<String>) -> Self {
        CliError { message: message.into(), hint: None, code: exit::FAILURE }
    }

    /// A failure with a specific exit code.
    pub fn with_code(code: i32, message: impl Into<String>) -> Self {
        CliError { message: message.into(), hint: None, code }
    }

    /// Adds (or replaces) the hint shown under the message.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for CliError {}

/// Result of every command: `Ok(exit code)` or an error to print.
pub type CliResult<T = i32> = Result<T, CliError>;

/// Formats an OS error the way people read it: "No such file or directory (os error 2)"
/// becomes "No such file or directory".
pub fn os_error_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}
