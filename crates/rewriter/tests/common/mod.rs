//! Shared helpers of the integration tests: building and loading small C
//! and C++ libraries, and a counting handler.

#![allow(dead_code)]

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles `source` (under tests/programs) into a shared library with
/// `compiler` and `flags`; `None` (with the reason printed) when the
/// compiler is missing, so the caller can skip.
pub fn build_shared_library(source: &str, compiler: &str, flags: &[&str]) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs").join(source);
    let out_dir = std::env::temp_dir().join(format!("rewriter-tests-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("lib{}.so", source.replace('.', "_")));
    let status = Command::new(compiler).args(flags).args(["-shared", "-fPIC", "-o"]).arg(&out).arg(&src).status();
    match status {
        Ok(s) if s.success() => Some(out),
        Ok(s) => panic!("{compiler} failed on {}: {s}", src.display()),
        Err(e) => {
            eprintln!("SKIPPED: cannot run {compiler}: {e}");
            None
        }
    }
}

/// dlopen()s a library and keeps it loaded for the rest of the process.
pub struct Library(*mut c_void);

impl Library {
    pub fn open(path: &Path) -> Library {
        let name = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW) };
        assert!(!handle.is_null(), "dlopen {} failed", path.display());
        Library(handle)
    }

    pub fn symbol(&self, name: &str) -> usize {
        let name = CString::new(name).unwrap();
        let address = unsafe { libc::dlsym(self.0, name.as_ptr()) };
        assert!(!address.is_null(), "no symbol {name:?}");
        address as usize
    }
}
