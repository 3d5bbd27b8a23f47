//! Debian's bcc tools (`bpfcc-tools`: Python + libbcc, programs compiled
//! at run time with clang) loaded through the syscall server as an ordinary
//! user, with no `BCC_KERNEL_SOURCE` set: the server finds Debian's
//! `linux-headers-amd64` and joins its two halves for bcc (`kheaders.rs`),
//! since the running kernel's own headers are usually not installed.
//!
//! Expectations were derived from the same tools on the kernel, as root,
//! with `BCC_KERNEL_SOURCE` pointing at a joined copy of the same headers.

use std::time::Duration;

use tests::World;

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// `funccount-bpfcc -d 6 PATH:add2` while the sample app calls add2 7 times:
/// the kernel printed `add2 7` under its header.
#[test]
fn funccount_counts_calls_with_headers_found_by_the_server() {
    let tool = "/usr/sbin/funccount-bpfcc";
    assert!(
        std::path::Path::new(tool).exists(),
        "{tool} is not installed (Debian package bpfcc-tools; scripts/setup.sh installs it)"
    );
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let target = format!("{}:add2", world.app.display());
    let mut loader = world
        .spawn_loader(tool, &["-d", "6", &target])
        .unwrap_or_else(|e| panic!("spawn funccount: {e}"));
    world.wait_for_links(&mut loader, 1, STEP_TIMEOUT);
    let app = world.spawn_app(&["7"]).expect("spawn the sample app");
    let app_out = app.wait_timeout(STEP_TIMEOUT);
    assert_eq!(app_out.status, Some(0), "sample failed: {}", app_out.stderr);
    let out = loader.wait_timeout(STEP_TIMEOUT);
    let rows: Vec<Vec<&str>> = out.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(
        out.stdout.contains("Tracing 1 functions for"),
        "--- stdout\n{}--- stderr\n{}",
        out.stdout,
        out.stderr
    );
    assert!(rows.contains(&vec!["FUNC", "COUNT"]), "no header\n{}", out.stdout);
    assert!(
        rows.contains(&vec!["add2", "7"]),
        "the kernel counted add2 7 times\n--- stdout\n{}--- stderr\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.status, Some(0), "stderr:\n{}", out.stderr);
}
