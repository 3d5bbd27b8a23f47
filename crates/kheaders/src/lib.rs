//! Kernel header trees for bcc: where the running kernel's own headers
//! are, and Debian's `linux-headers-<v>-{common,<arch>}` halves joined
//! into the single tree bcc expects.
//!
//! Shared by the syscall server (which points bcc at a joined tree, see
//! `syscall-server/src/kheaders.rs`) and `userbpf doctor` (which says how
//! to install headers when there are none): one answer to "which headers
//! would bcc get".

use std::path::{Path, PathBuf};

/// Whether the running kernel's own headers are where bcc looks first.
pub fn running_kernel_has_headers() -> bool {
    // SAFETY: uname fills a zeroed utsname we own.
    let release = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return false;
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
    };
    ["build", "source"]
        .iter()
        .any(|d| Path::new(&format!("/lib/modules/{release}/{d}/include")).is_dir())
        || Path::new("/sys/kernel/kheaders.tar.xz").exists()
}

/// The newest `linux-headers-<v>-<arch>` under `dir` with its
/// `linux-headers-<v>-common`: `(common, arch)`.
pub fn newest_debian_headers(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut pairs: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix("linux-headers-")?;
            let (version, flavour) = rest.rsplit_once('-')?;
            if flavour == "common" || !e.path().join("include/generated").is_dir() {
                return None;
            }
            let common = dir.join(format!("linux-headers-{version}-common"));
            common.join("include").is_dir().then(|| (common, e.path()))
        })
        .collect();
    pairs.sort_by_key(|p| version_key(&p.1));
    pairs.pop()
}

/// Numeric fields of a header directory's version, for ordering.
fn version_key(p: &Path) -> Vec<u64> {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Join Debian's two halves into `tree`, as symbolic links: `include/` and
/// `arch/x86/include/` hold the common entries plus the arch half's
/// `generated` (and `include/config`); the configuration and Makefile
/// come from the arch half. Built under a temporary name and renamed, so a
/// concurrent loader never sees half a tree.
pub fn join_tree(common: &Path, arch: &Path, tree: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    let parent = tree.parent().ok_or(std::io::ErrorKind::InvalidInput)?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let link_entries = |from: &Path, to: &Path| -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let dst = to.join(e.file_name());
            if !dst.exists() {
                symlink(e.path(), dst)?;
            }
        }
        Ok(())
    };
    let built = (|| {
        link_entries(&arch.join("include"), &tmp.join("include"))?;
        link_entries(&common.join("include"), &tmp.join("include"))?;
        link_entries(&arch.join("arch/x86/include"), &tmp.join("arch/x86/include"))?;
        link_entries(&common.join("arch/x86/include"), &tmp.join("arch/x86/include"))?;
        for f in [".config", "Module.symvers"] {
            if arch.join(f).exists() {
                symlink(arch.join(f), tmp.join(f))?;
            }
        }
        symlink(common.join("Makefile"), tmp.join("Makefile"))?;
        std::fs::rename(&tmp, tree)
    })();
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkdirs(root: &Path, dirs: &[&str]) {
        for d in dirs {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
    }

    /// The newest complete pair wins; the joined tree has both halves.
    #[test]
    fn joins_the_newest_debian_header_pair() {
        let root = std::env::temp_dir().join(format!("userbpf-kheaders-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let src = root.join("src");
        for v in ["6.1.0-9", "6.1.0-57"] {
            mkdirs(
                &src,
                &[
                    &format!("linux-headers-{v}-common/include/linux"),
                    &format!("linux-headers-{v}-common/arch/x86/include/asm"),
                    &format!("linux-headers-{v}-amd64/include/generated"),
                    &format!("linux-headers-{v}-amd64/include/config"),
                    &format!("linux-headers-{v}-amd64/arch/x86/include/generated"),
                ],
            );
            std::fs::write(src.join(format!("linux-headers-{v}-common/Makefile")), "").unwrap();
        }
        // An arch half without its common half is not a candidate.
        mkdirs(&src, &["linux-headers-7.0.0-1-amd64/include/generated"]);
        let (common, arch) = newest_debian_headers(&src).expect("a pair");
        assert!(arch.ends_with("linux-headers-6.1.0-57-amd64"), "{}", arch.display());
        assert!(common.ends_with("linux-headers-6.1.0-57-common"));
        let tree = root.join("cache/kernel-headers/6.1.0-57-amd64");
        join_tree(&common, &arch, &tree).unwrap();
        for p in ["include/linux", "include/generated", "include/config", "arch/x86/include/asm", "arch/x86/include/generated", "Makefile"] {
            assert!(tree.join(p).exists(), "{p} missing from the joined tree");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
