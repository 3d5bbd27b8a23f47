//! The command-line surface: help with examples, usage errors, `doctor`,
//! and commands whose dependencies are missing failing with one clear line.

mod common;
use common::*;

#[test]
fn help_lists_every_command_with_examples_and_exit_codes() {
    let out = run_with_timeout(userbpf().arg("--help"));
    assert_eq!(out.status.code(), Some(0));
    let (stdout, _) = texts(&out);
    for verb in ["run", "load", "bpftrace", "attach", "detach", "list", "map", "prog", "doctor"] {
        assert!(stdout.contains(&format!("\n  {verb} ")), "help mentions {verb}:\n{stdout}");
    }
    assert!(stdout.contains("Examples:") && stdout.contains("Exit codes:"), "{stdout}");
    for verb in ["run", "load", "attach", "detach", "list", "doctor"] {
        let out = run_with_timeout(userbpf().args([verb, "--help"]));
        assert_eq!(out.status.code(), Some(0));
        assert!(texts(&out).0.contains("Example"), "`{verb} --help` has examples");
    }
}

#[test]
fn usage_errors_exit_2_without_a_panic() {
    for args in [&["attach"][..], &["attach", "not-a-pid"], &["attach", "--timeout", "0", "1"], &["frobnicate"], &["run"], &["map", "dump"]] {
        let out = run_with_timeout(userbpf().args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!texts(&out).1.contains("panicked"), "{args:?}");
    }
}

#[test]
fn doctor_reports_every_check_as_json() {
    let scratch = Scratch::new("doctor");
    build_marker_lib(&scratch, "libagent.so");
    build_marker_lib(&scratch, "libsyscall_server.so");
    let registry = scratch.path("registry");
    std::fs::create_dir(&registry).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&registry, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_with_timeout(
        userbpf().args(["doctor", "--json"]).env("USERBPF_LIB_DIR", &scratch.0).env("USERBPF_DIR", &registry),
    );
    let report: serde_json::Value = serde_json::from_str(&texts(&out).0).expect("doctor --json prints JSON");
    let checks = report["checks"].as_array().unwrap();
    let find = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("check {name}"));
    assert_eq!(find("libagent.so")["status"], "ok");
    assert_eq!(find("libsyscall_server.so")["status"], "ok");
    // A world-writable registry is a problem, with a fix naming the directory.
    let dir = find("registry directory");
    assert_eq!(dir["status"], "problem");
    assert!(dir["fix"].as_str().unwrap().contains(&format!("chmod 0700 {}", registry.display())));
    assert_eq!(out.status.code(), Some(5), "problems make doctor exit 5");
    assert!(report["problems"].as_u64().unwrap() >= 1);

    std::fs::set_permissions(&registry, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = run_with_timeout(userbpf().arg("doctor").env("USERBPF_LIB_DIR", &scratch.0).env("USERBPF_DIR", &registry));
    let (stdout, _) = texts(&out);
    assert!(stdout.contains("[ok  ] registry directory"), "{stdout}");
    for name in ["kernel", "membarrier", "rseq", "ptrace (attach)", "/dev/shm", "bpftrace"] {
        assert!(stdout.contains(&format!("] {name} ")), "doctor checks {name}:\n{stdout}");
    }

    // A registry another build made (another layout version) is a problem,
    // which every command would then refuse: doctor says so, and how to fix it.
    let mut header = Vec::from(*b"UBPF-REG");
    header.extend_from_slice(&(shm_maps::LAYOUT_VERSION + 7).to_ne_bytes());
    header.resize(4096, 0);
    std::fs::write(registry.join("registry"), &header).unwrap();
    let out = run_with_timeout(
        userbpf().args(["doctor", "--json"]).env("USERBPF_LIB_DIR", &scratch.0).env("USERBPF_DIR", &registry),
    );
    let report: serde_json::Value = serde_json::from_str(&texts(&out).0).expect("doctor --json prints JSON");
    let dir = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "registry directory").unwrap().clone();
    assert_eq!(dir["status"], "problem", "{dir}");
    let all = dir.to_string();
    assert!(
        all.contains(&format!(
            "holds a registry of layout version {}; this userbpf uses version {}",
            shm_maps::LAYOUT_VERSION + 7,
            shm_maps::LAYOUT_VERSION
        )),
        "{all}"
    );
    assert!(dir["fix"].as_str().unwrap().contains(&format!("rm -r {}", registry.display())), "{dir}");
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    let scratch = Scratch::new("epipe");
    let registry = scratch.path("registry");
    for args in [&["list"][..], &["list", "--json"], &["--help"]] {
        // A pipe whose read end is closed before the child exists. A child
        // that another test thread forks at that moment may hold the read
        // end until it execs, letting one write through: a few attempts,
        // each of which must end quietly, and at least one by SIGPIPE.
        let mut by_sigpipe = 0;
        for _ in 0..5 {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills two fds we then own.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: both fds were just created and are owned only here.
            let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            drop(read_end);
            let out = userbpf()
                .args(args)
                .env("USERBPF_DIR", &registry)
                .stdout(std::process::Stdio::from(write_end))
                .stderr(std::process::Stdio::piped())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("internal error") && !stderr.contains("panicked"), "{args:?}: {stderr}");
            assert!(
                out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
                "{args:?}: {:?} {stderr}",
                out.status
            );
            by_sigpipe += usize::from(out.status.signal() == Some(libc::SIGPIPE));
        }
        assert!(by_sigpipe > 0, "{args:?}: never met the closed pipe");
    }
}

#[test]
fn doctor_never_advises_removing_or_chmodding_a_directory_that_is_not_a_registry() {
    let scratch = Scratch::new("doctor-tmp");
    let not_a_registry = scratch.path("shared-tmp");
    std::fs::create_dir(&not_a_registry).unwrap();
    std::fs::write(not_a_registry.join("somebody-elses-file"), b"x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&not_a_registry, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = run_with_timeout(userbpf().arg("doctor").env("USERBPF_DIR", &not_a_registry));
    let (stdout, stderr) = texts(&out);
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("not a userbpf registry"), "{all}");
    assert!(!all.contains("rm -r") && !all.contains("chmod"), "{all}");
}

/// Another user's registry and another user's process are named as such,
/// not shown as emptiness or as a bare EACCES: `list` and `map dump` of a
/// registry in a root-only directory, and `attach` to a root-owned
/// process, as an ordinary user (nobody when the tests run as root).
#[test]
fn another_users_registry_and_process_are_named() {
    let scratch = Scratch::new("not-yours");
    std::fs::set_permissions(&scratch.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cli = scratch.path("userbpf");
    std::fs::copy(env!("CARGO_BIN_EXE_userbpf"), &cli).unwrap();
    // Root's private directory: root-owned, mode 0700 on Debian.
    let theirs = std::path::Path::new("/root/userbpf-registry");
    assert!(!is_root() || std::fs::metadata("/root").is_ok(), "/root exists");
    for args in [&["list"][..], &["map", "dump", "1"]] {
        let out = run_with_timeout(as_user(&cli).args(args).env("USERBPF_DIR", theirs));
        assert_eq!(out.status.code(), Some(3), "{args:?}: {:?}", texts(&out));
        let stderr = texts(&out).1;
        assert!(stderr.starts_with(&format!("userbpf: cannot read the registry {}: ", theirs.display())), "{stderr}");
        assert!(stderr.contains("hint: registries are private to their user"), "{stderr}");
    }
    // A root-owned process (init when not root; a fresh child when root).
    let mut child = if is_root() { Some(std::process::Command::new("sleep").arg("30").spawn().unwrap()) } else { None };
    let pid = child.as_ref().map_or(1, |c| c.id() as i32);
    let out = run_with_timeout(as_user(&cli).args(["attach", &pid.to_string()]));
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(out.status.code(), Some(3), "{:?}", texts(&out));
    let stderr = texts(&out).1;
    // SAFETY: geteuid has no preconditions.
    let me = if is_root() { NOBODY } else { unsafe { libc::geteuid() } };
    assert!(stderr.contains(&format!("belongs to uid 0, and you are uid {me}: only its owner (or root) may attach to it")), "{stderr}");
}
