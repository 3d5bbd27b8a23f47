//! `userbpf attach` on an app running in its own pid and mount namespaces
//! (a container, as `unshare` makes one): the host pid is used, the library
//! must be visible in the app's filesystem, and when it is not, attach says so.
//! Needs root for `unshare`; skipped with a printed reason otherwise.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn can_unshare() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "true"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err("unshare --pid --mount does not work here".into())
    }
}

/// The first child of `parent` (the app `unshare --fork` started), as the host sees it.
fn child_of(parent: u32) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "unshare started no child");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Contained {
    unshare: std::process::Child,
    host_pid: i32,
}

impl Drop for Contained {
    fn drop(&mut self) {
        // SAFETY: kill on a pid we started (through unshare); SIGKILL of the
        // namespace's init ends the namespace.
        unsafe { libc::kill(self.host_pid, libc::SIGKILL) };
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Starts the fixture app in new pid + mount namespaces, after running `setup` (shell) inside.
fn start_contained(scratch: &Scratch, target: &std::path::Path, marker: &std::path::Path, setup: &str) -> Contained {
    let pidfile = scratch.path("contained.pid");
    let script = format!("{setup} exec {} {} sleep", target.display(), pidfile.display());
    let unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--propagation", "private", "sh", "-c", &script])
        .env("USERBPF_TEST_MARKER", marker)
        .stdin(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let inner_pid = wait_for_file(&pidfile);
    assert_eq!(inner_pid.trim(), "1", "the app is pid 1 of its own pid namespace");
    Contained { host_pid: child_of(unshare.id()), unshare }
}

#[test]
fn attach_to_an_app_in_its_own_pid_and_mount_namespace() {
    if let Err(why) = can_unshare() {
        eprintln!("skipped: {why}");
        return;
    }
    let scratch = Scratch::new("ns-attach");
    let target = build_target(&scratch);
    build_marker_lib(&scratch, "libagent.so");
    let marker = scratch.path("marker");
    let app = start_contained(&scratch, &target, &marker, "");
    let out = run_with_timeout(userbpf().args(["attach", &app.host_pid.to_string()]).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    // The constructor ran inside the namespace: it sees itself as pid 1.
    assert_eq!(wait_for_file(&marker), "loaded 1 3.0\n");
    let status = std::fs::read_to_string(format!("/proc/{}/status", app.host_pid)).unwrap();
    assert!(status.contains("State:\tS") || status.contains("State:\tR"), "app still running:\n{status}");
}

#[test]
fn attach_says_when_the_library_is_not_visible_inside_the_container() {
    if let Err(why) = can_unshare() {
        eprintln!("skipped: {why}");
        return;
    }
    let scratch = Scratch::new("ns-hidden");
    let target = build_target(&scratch);
    let hidden = scratch.path("hidden");
    std::fs::create_dir(&hidden).unwrap();
    let lib = hidden.join("libagent.so");
    common::compile("marker_lib.c", &lib, &["-shared", "-fPIC"]);
    let marker = scratch.path("marker");
    // Inside the app's mount namespace, an empty tmpfs hides the library.
    let app = start_contained(&scratch, &target, &marker, &format!("mount -t tmpfs none {} &&", hidden.display()));
    let out = run_with_timeout(userbpf().args(["attach", &app.host_pid.to_string()]).env("USERBPF_LIB_DIR", &hidden));
    assert_eq!(out.status.code(), Some(3), "{:?}", texts(&out));
    let (_, stderr) = texts(&out);
    assert!(stderr.contains("cannot see") && stderr.contains("hint: make the library visible"), "{stderr}");
    assert!(!marker.exists(), "nothing was loaded");
}
