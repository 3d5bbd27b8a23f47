//! `userbpf attach` on an app running in its own pid and mount namespaces
//! (a container, as `unshare` makes one): the host pid is used, the library
//! must be visible in the app's filesystem, and when it is not, attach says so.
//! Needs root for `unshare` (CI runs as root); fails naming why otherwise.

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
        if self.host_pid > 0 {
            unsafe { libc::kill(self.host_pid, libc::SIGKILL) };
        } else if let Ok(children) = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.unshare.id())) {
            for pid in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: as above, the namespace's init started by our unshare.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
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
        panic!("this test needs namespaces (CI runs as root): {why}");
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
        panic!("this test needs namespaces (CI runs as root): {why}");
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

/// The sidecar layout: the app in one "container" (pid + mount + proc
/// namespaces), stock bpftrace in another, sharing only the registry
/// directory, bind-mounted at a different path in each and named by
/// `USERBPF_DIR`. Probes attach, results come back to the sidecar, and the
/// script's pid filter uses the app's own pid (as the app sees itself).
#[test]
fn bpftrace_sidecar_traces_an_app_in_another_container() {
    if let Err(why) = can_unshare() {
        panic!("this test needs namespaces (CI runs as root): {why}");
    }
    require_prerequisites();
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("sidecar");
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let userbpf_bin = scratch.path("bin/userbpf");
    std::fs::create_dir(scratch.path("bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_userbpf"), &userbpf_bin).unwrap();
    for lib in ["libagent.so", "libsyscall_server.so"] {
        std::fs::copy(built_library(lib).unwrap(), scratch.path(&format!("bin/{lib}"))).unwrap();
    }
    let app = scratch.path("traced_app");
    compile("traced_app.c", &app, &[]);
    let registry = scratch.path("registry");
    let run = scratch.path("run");
    for dir in [&registry, &run] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown_to_user(dir);
    }
    for side in ["app-side", "sidecar"] {
        std::fs::create_dir(scratch.path(side)).unwrap();
    }
    let drop_privileges = format!("setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups");

    // Container 1: the app, started with the agent by `userbpf run`, pid 2 in its namespace.
    let app_dir = scratch.path("app-side");
    let pidfile = run.join("app.pid");
    let app_script = format!(
        "mount --bind {reg} {dir} && {drop} env USERBPF_DIR={dir} {userbpf} run {app} {pidfile} & wait",
        reg = registry.display(),
        dir = app_dir.display(),
        drop = drop_privileges,
        userbpf = userbpf_bin.display(),
        app = app.display(),
        pidfile = pidfile.display(),
    );
    let app_container = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--mount-proc", "--propagation", "private", "sh", "-c", &app_script])
        .stdin(Stdio::null())
        .spawn()
        .expect("start the app container");
    let app_container = Contained { host_pid: 0, unshare: app_container };
    let app_pid = wait_for_file(&pidfile).trim().to_string();
    assert_eq!(app_pid, "2", "the app's own pid in its container");

    // Container 2: the sidecar running stock bpftrace through `userbpf bpftrace`.
    let side_dir = scratch.path("sidecar");
    let script = format!(
        "uprobe:{app}:tick /pid == {app_pid}/ {{ @mine = count(); @n = @n + 1; if (@n >= 30) {{ exit(); }} }} \
         uprobe:{app}:tick /pid != {app_pid}/ {{ @other = count(); }}",
        app = app.display()
    );
    let sidecar_script = format!(
        "mount --bind {reg} {dir} && exec {drop} env USERBPF_DIR={dir} {userbpf} bpftrace -e \"$0\"",
        reg = registry.display(),
        dir = side_dir.display(),
        drop = drop_privileges,
        userbpf = userbpf_bin.display(),
    );
    let out = run_with_timeout(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--mount-proc", "--propagation", "private", "sh", "-c", &sidecar_script])
            .arg(&script)
            .stdin(Stdio::null()),
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "sidecar bpftrace failed:\n{stdout}\n{stderr}");
    let mine: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("@mine: "))
        .unwrap_or_else(|| panic!("no @mine in the sidecar's output:\n{stdout}\n{stderr}"))
        .trim()
        .parse()
        .unwrap();
    assert!(mine >= 30, "{stdout}");
    // bpftrace prints a never-hit count() as 0 (the kernel does the same).
    let other = stdout.lines().find_map(|l| l.strip_prefix("@other: ")).map(str::trim);
    assert!(matches!(other, None | Some("0")), "the pid filter used the app's own pid:\n{stdout}");
    // Neither container's bind mount leaked to the host.
    assert_eq!(std::fs::read_dir(&app_dir).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&side_dir).unwrap().count(), 0);
    drop(app_container);
}
