//! Children of the loader get the agent, not the server.
//!
//! bpftrace `-c CMD` forks and execs CMD with the loader's environment. At
//! load time the server rewrites its own entry in `LD_PRELOAD` to
//! `libagent.so` from the same directory (both cdylibs are built into the
//! same target dir and installed side by side), so a spawned command is
//! traced. If the agent is missing, the server removes itself from
//! `LD_PRELOAD` (a child must never believe it is a userbpf loader) and says so.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// File name of the agent next to the server.
pub const AGENT_FILE: &str = "libagent.so";

/// Path of the shared object containing this function (the server itself).
fn own_path() -> Option<PathBuf> {
    // SAFETY: dladdr only reads loader tables; `info` is a zeroed out-param.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(own_path as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null()
        {
            return None;
        }
        Some(PathBuf::from(OsStr::from_bytes(
            CStr::from_ptr(info.dli_fname).to_bytes(),
        )))
    }
}

/// Replace `server` in a colon/space separated preload list by `agent`
/// (or drop it when `agent` is `None`), keeping the other entries.
pub fn rewrite_list(list: &str, server: &Path, agent: Option<&Path>) -> String {
    let server_name = server.file_name();
    list.split([':', ' '])
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let p = Path::new(e);
            let is_server =
                p == server || (p.file_name() == server_name && p.file_name().is_some());
            if is_server {
                agent.map(|a| a.to_string_lossy().into_owned())
            } else {
                Some(e.to_string())
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// Rewrite `LD_PRELOAD` for children (called once from the constructor,
/// while the loader is still single-threaded).
pub fn rewrite_ld_preload() {
    let Some(list) = std::env::var_os("LD_PRELOAD") else {
        return;
    };
    let Some(server) = own_path() else { return };
    let agent = server.with_file_name(AGENT_FILE);
    let agent = if agent.exists() {
        Some(agent)
    } else {
        crate::report::line(&format!(
            "userbpf: {} not found next to the syscall server: commands the loader starts will not be traced",
            agent.display()
        ));
        None
    };
    let new = rewrite_list(&list.to_string_lossy(), &server, agent.as_deref());
    let (Ok(key), Ok(val)) = (CString::new("LD_PRELOAD"), CString::new(new)) else {
        return;
    };
    // SAFETY: called from the constructor before any other thread exists;
    // both strings are NUL-terminated.
    unsafe { libc::setenv(key.as_ptr(), val.as_ptr(), 1) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_server() {
        let s = Path::new("/opt/u/libsyscall_server.so");
        let a = Path::new("/opt/u/libagent.so");
        assert_eq!(
            rewrite_list("/opt/u/libsyscall_server.so", s, Some(a)),
            "/opt/u/libagent.so"
        );
        assert_eq!(
            rewrite_list("/x/libfoo.so:/opt/u/libsyscall_server.so", s, Some(a)),
            "/x/libfoo.so:/opt/u/libagent.so"
        );
        assert_eq!(
            rewrite_list("libsyscall_server.so /x/libfoo.so", s, None),
            "/x/libfoo.so"
        );
    }
}
