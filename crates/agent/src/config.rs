//! The agent's settings, all from the environment (the agent has no other
//! input: it is preloaded into someone else's program).
//!
//! | variable | effect |
//! |---|---|
//! | `USERBPF_DIR` | registry directory (default: shm-maps' per-user default) |
//! | `USERBPF_QUIET=1` | no messages on stderr |
//! | `USERBPF_AGENT_DEBUG=1` | also print attach/detach progress |
//! | `USERBPF_AGENT_DISABLE=1` | load but do nothing at all |

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct Config {
    pub registry_dir: Option<PathBuf>,
    pub quiet: bool,
    pub debug: bool,
    pub disabled: bool,
}

fn flag(value: Option<OsString>) -> bool {
    matches!(value.as_deref().and_then(|v| v.to_str()), Some(v) if !v.is_empty() && v != "0")
}

impl Config {
    pub fn from_env() -> Config {
        Config {
            registry_dir: std::env::var_os("USERBPF_DIR").filter(|d| !d.is_empty()).map(PathBuf::from),
            quiet: flag(std::env::var_os("USERBPF_QUIET")),
            debug: flag(std::env::var_os("USERBPF_AGENT_DEBUG")),
            disabled: flag(std::env::var_os("USERBPF_AGENT_DISABLE")),
        }
    }
}
