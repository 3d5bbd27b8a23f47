//! Kernel headers for bcc, found without the user setting anything.
//!
//! bcc compiles its programs at run time against the running kernel's
//! headers: `/lib/modules/$(uname -r)/build`, else the kheaders module,
//! else `$BCC_KERNEL_SOURCE`. On a machine whose kernel is not Debian's
//! own (a VM, a container host), none exists, and bcc dies with "Unable to
//! find kernel headers". Debian's `linux-headers-amd64` installs a
//! header tree in two halves, `/usr/src/linux-headers-<v>-common` and
//! `/usr/src/linux-headers-<v>-amd64` (the generated files and the
//! configuration), which bcc cannot use as they are. uprobe programs only
//! need the headers to compile (they read user memory, not kernel
//! structures), so any release's headers do.
//!
//! At load, when bcc would find nothing, the server joins the newest
//! installed pair (the `kheaders` crate) into one tree of symbolic links under the user's cache
//! directory (`$XDG_CACHE_HOME/userbpf/kernel-headers/<v>`, else
//! `~/.cache/…`, else `/tmp/userbpf-<uid>/…`), made once and reused, and
//! sets `BCC_KERNEL_SOURCE` to it. Nothing is done when the variable is
//! set already or the running kernel's own headers exist. `userbpf doctor`
//! says how to install the headers when there are none.

use std::path::{Path, PathBuf};

use kheaders::{join_tree, newest_debian_headers, running_kernel_has_headers};

/// Set `BCC_KERNEL_SOURCE` to a joined Debian header tree if bcc would
/// find no headers. Called from the constructor (one thread only).
pub fn point_bcc_at_headers() {
    if std::env::var_os("BCC_KERNEL_SOURCE").is_some() || running_kernel_has_headers() {
        return;
    }
    let Some((common, arch)) = newest_debian_headers(Path::new("/usr/src")) else {
        return;
    };
    let name = arch.file_name().map(|n| n.to_owned()).unwrap_or_default();
    let tree_in = |cache: &Path| cache.join("kernel-headers").join(&name);
    let ours = |d: &Path| {
        use std::os::unix::fs::MetadataExt;
        // Only a directory of our own: /tmp is shared.
        // SAFETY: getuid has no preconditions.
        std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.uid() == unsafe { libc::getuid() })
    };
    // Every start after the first: the tree is there, reuse it.
    let tree = match cache_candidates().iter().map(|c| tree_in(c)).find(|t| ours(t) && t.join("include").is_dir()) {
        Some(t) => t,
        None => {
            let Some(cache) = cache_candidates().into_iter().find(|d| writable_own_dir(d, ours)) else { return };
            let tree = tree_in(&cache);
            // A concurrent loader may have finished it first (our rename fails).
            if join_tree(&common, &arch, &tree).is_err() && !tree.join("include").is_dir() {
                return;
            }
            tree
        }
    };
    // SAFETY: the constructor runs before any other thread of the loader
    // exists, so nothing reads the environment concurrently.
    unsafe { std::env::set_var("BCC_KERNEL_SOURCE", &tree) };
}

/// Where the user's cache for userbpf may be, in order of preference.
fn cache_candidates() -> Vec<PathBuf> {
    [
        std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("userbpf")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/userbpf")),
        // SAFETY: getuid has no preconditions.
        Some(PathBuf::from(format!("/tmp/userbpf-{}", unsafe { libc::getuid() }))),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Make `d` (private) if needed; whether it is our own and writable.
fn writable_own_dir(d: &Path, ours: impl Fn(&Path) -> bool) -> bool {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(d);
    let probe = d.join(format!(".probe-{}", std::process::id()));
    let writable = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ours(d) && writable
}
