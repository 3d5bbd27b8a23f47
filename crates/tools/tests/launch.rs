//! `userbpf run`, `userbpf load` and `userbpf bpftrace`: the library is
//! found and preloaded (existing LD_PRELOAD kept), the command replaces
//! userbpf (same pid), and its exit status is userbpf's.

mod common;
use common::*;

#[test]
fn run_preloads_the_agent_and_keeps_the_exit_status() {
    let scratch = Scratch::new("run");
    build_marker_lib(&scratch, "libagent.so");
    let marker = scratch.path("marker");
    let out = run_with_timeout(
        userbpf()
            .args(["run", "--", "sh", "-c", "echo \"pid $$ preload $LD_PRELOAD\"; exit 7"])
            .env("USERBPF_LIB_DIR", &scratch.0)
            .env("LD_PRELOAD", "/nonexistent-but-kept.so")
            .env("USERBPF_TEST_MARKER", &marker),
    );
    let (stdout, _) = texts(&out);
    assert_eq!(out.status.code(), Some(7), "the command's exit status");
    let lib = scratch.path("libagent.so").canonicalize().unwrap();
    assert!(stdout.contains(&format!("preload {}:/nonexistent-but-kept.so", lib.display())), "{stdout}");
    // The library's constructor ran in the shell, whose pid is the one
    // userbpf was started with (exec, not a child).
    let shell_pid = stdout.split_whitespace().nth(1).unwrap();
    let text = std::fs::read_to_string(&marker).unwrap();
    assert!(text.starts_with(&format!("loaded {shell_pid} ")), "{text}");
}

#[test]
fn load_and_bpftrace_preload_the_syscall_server() {
    let scratch = Scratch::new("load");
    build_marker_lib(&scratch, "libsyscall_server.so");
    let out = run_with_timeout(
        userbpf().args(["load", "sh", "-c", "echo $LD_PRELOAD"]).env("USERBPF_LIB_DIR", &scratch.0).env_remove("LD_PRELOAD"),
    );
    assert_eq!(out.status.code(), Some(0));
    let lib = scratch.path("libsyscall_server.so").canonicalize().unwrap();
    assert_eq!(texts(&out).0.trim(), lib.to_str().unwrap());

    // `userbpf bpftrace` runs `bpftrace` from $PATH: put a fake one first.
    let bin = scratch.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("bpftrace");
    std::fs::write(&fake, "#!/bin/sh\necho \"fake bpftrace $* with $LD_PRELOAD\"\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = run_with_timeout(
        userbpf().args(["bpftrace", "-e", "BEGIN { exit(); }"]).env("USERBPF_LIB_DIR", &scratch.0).env("PATH", path),
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(texts(&out).0.trim(), format!("fake bpftrace -e BEGIN {{ exit(); }} with {}", lib.display()));
}

#[test]
fn missing_library_and_missing_command_fail_with_meaningful_codes() {
    let scratch = Scratch::new("launch-errors");
    let out = run_with_timeout(userbpf().args(["run", "true"]).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(out.status.code(), Some(3));
    let (_, stderr) = texts(&out);
    assert!(stderr.starts_with("userbpf: cannot find libagent.so; searched "), "{stderr}");
    assert!(stderr.contains("\nhint: $USERBPF_LIB_DIR is set"), "{stderr}");

    build_marker_lib(&scratch, "libagent.so");
    let out = run_with_timeout(userbpf().args(["run", "./no-such-program"]).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(out.status.code(), Some(127));
    assert!(texts(&out).1.starts_with("userbpf: command not found: ./no-such-program\n"), "{:?}", texts(&out));

    let not_executable = scratch.path("data.txt");
    std::fs::write(&not_executable, "x").unwrap();
    let out = run_with_timeout(userbpf().arg("run").arg(&not_executable).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(out.status.code(), Some(126));
}

#[test]
fn libraries_are_found_next_to_the_binary_and_in_the_install_prefix() {
    let scratch = Scratch::new("install-prefix");
    // <prefix>/bin/userbpf with <prefix>/lib/userbpf/libagent.so
    let bin = scratch.path("prefix/bin");
    let lib = scratch.path("prefix/lib/userbpf");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_userbpf"), bin.join("userbpf")).unwrap();
    let stamp = format!("-DSTAMP_LAYOUT={}", shm_maps::LAYOUT_VERSION);
    compile("marker_lib.c", &lib.join("libagent.so"), &["-shared", "-fPIC", &stamp]);
    let installed = || {
        let mut cmd = std::process::Command::new(bin.join("userbpf"));
        cmd.args(["run", "sh", "-c", "echo $LD_PRELOAD"]).env_remove("USERBPF_LIB_DIR").env_remove("LD_PRELOAD");
        cmd
    };
    let out = run_with_timeout(&mut installed());
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(texts(&out).0.trim(), lib.join("libagent.so").canonicalize().unwrap().to_str().unwrap());

    // A copy next to the binary wins (the cargo layout).
    compile("marker_lib.c", &bin.join("libagent.so"), &["-shared", "-fPIC", &stamp]);
    let out = run_with_timeout(&mut installed());
    assert_eq!(texts(&out).0.trim(), bin.join("libagent.so").canonicalize().unwrap().to_str().unwrap());
}

/// `userbpf --version`: this build (version, commit, registry layout), then
/// each library it would preload with its own stamp and path, or why there
/// is none.
#[test]
fn version_names_this_build_and_the_libraries_it_would_use() {
    let scratch = Scratch::new("version");
    let agent = build_marker_lib(&scratch, "libagent.so");
    let layout = shm_maps::LAYOUT_VERSION;
    for flag in ["--version", "-V"] {
        let out = run_with_timeout(userbpf().arg(flag).env("USERBPF_LIB_DIR", &scratch.0));
        assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
        let stdout = texts(&out).0;
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        let own = format!("userbpf {} (commit ", env!("CARGO_PKG_VERSION"));
        assert!(lines[0].starts_with(&own) && lines[0].ends_with(&format!(", registry layout {layout})")), "{stdout}");
        let path = agent.canonicalize().unwrap();
        assert_eq!(lines[1], format!("libagent.so 9.9.9 (commit feedface, registry layout {layout}): {}", path.display()));
        assert!(lines[2].starts_with("libsyscall_server.so: cannot find libsyscall_server.so; searched "), "{stdout}");
    }
}

/// A library stamped with another registry layout is refused by name
/// before anything preloads it; one without a stamp is used with a warning.
#[test]
fn a_library_of_another_registry_layout_is_refused() {
    let scratch = Scratch::new("layout");
    let marker = scratch.path("marker");
    let other = shm_maps::LAYOUT_VERSION + 1;
    let agent = build_marker_lib_stamped(&scratch, "libagent.so", Some(other));
    let run = || {
        run_with_timeout(
            userbpf().args(["run", "true"]).env("USERBPF_LIB_DIR", &scratch.0).env("USERBPF_TEST_MARKER", &marker),
        )
    };
    let out = run();
    assert_eq!(out.status.code(), Some(3), "{:?}", texts(&out));
    let stderr = texts(&out).1;
    let path = agent.canonicalize().unwrap();
    assert!(
        stderr.starts_with(&format!(
            "userbpf: {} is from another userbpf build: 9.9.9 (commit feedface, registry layout {other}); this userbpf is {} (commit ",
            path.display(),
            env!("CARGO_PKG_VERSION")
        )),
        "{stderr}"
    );
    assert!(stderr.contains("\nhint: use the libraries built with this userbpf"), "{stderr}");
    assert!(!marker.exists(), "nothing was preloaded");

    build_marker_lib_stamped(&scratch, "libagent.so", None);
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert!(
        texts(&out).1.contains(&format!("userbpf: warning: {} carries no userbpf build stamp", path.display())),
        "{:?}",
        texts(&out)
    );
    assert!(std::fs::read_to_string(&marker).unwrap().starts_with("loaded "), "preloaded");
}

/// A statically linked command gets no dynamic loader, so LD_PRELOAD never
/// brings the agent in: `run` says so (and still runs it), where a dynamic
/// one gets no warning.
#[test]
fn a_static_command_is_warned_about() {
    let scratch = Scratch::new("static");
    build_marker_lib(&scratch, "libagent.so");
    let app = scratch.path("static_app");
    compile("exit_with.c", &app, &["-static"]);
    let out = run_with_timeout(userbpf().arg("run").arg(&app).arg("3").env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(out.status.code(), Some(3), "the command still runs: {:?}", texts(&out));
    let stderr = texts(&out).1;
    assert!(
        stderr.contains(&format!(
            "userbpf: warning: {} is statically linked: no dynamic loader runs in it to read LD_PRELOAD, so libagent.so cannot be loaded and it will run untraced",
            app.display()
        )),
        "{stderr}"
    );
    let out = run_with_timeout(userbpf().args(["run", "true"]).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(out.status.code(), Some(0));
    assert!(!texts(&out).1.contains("statically linked"), "{:?}", texts(&out));
}
