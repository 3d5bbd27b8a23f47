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
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let scratch = Scratch::new("epipe");
    let registry = scratch.path("registry");
    for args in [&["list"][..], &["list", "--json"], &["--help"]] {
        let mut child = userbpf()
            .args(args)
            .env("USERBPF_DIR", &registry)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the child (still starting) writes.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("internal error") && !stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?} {stderr}", out.status);
    }
}
