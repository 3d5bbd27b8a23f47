//! `userbpf attach` and `userbpf detach` against real processes that userbpf
//! did not start: the library gets loaded (its constructor runs in the
//! target), the target keeps running with its registers, FP state and
//! system calls intact, and the pause is reported.

mod common;
use common::*;

/// The target's mappings, read through a live thread (a main thread that
/// exited shows none).
fn maps_of(pid: i32) -> String {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("maps")).ok())
        .find(|maps| !maps.is_empty())
        .unwrap_or_default()
}

fn attach_and_check(mode: &str) {
    let scratch = Scratch::new(&format!("attach-{mode}"));
    let target_bin = build_target(&scratch);
    let lib = build_marker_lib(&scratch, "libagent.so");
    let marker = scratch.path("marker");
    let mut target = Target::start(&target_bin, &scratch, mode, &marker);
    // Let the target get well into its loop.
    std::thread::sleep(std::time::Duration::from_millis(50));

    let out = run_with_timeout(userbpf().args(["attach", "--json", &target.pid.to_string()]).env("USERBPF_LIB_DIR", &scratch.0));
    let (stdout, stderr) = texts(&out);
    if let Some(scope) = yama_blocks_attach() {
        // This machine forbids it: attach must say why and how to fix it.
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains(&format!("Yama ptrace_scope = {scope}")) && stderr.contains("hint: "), "{stderr}");
        eprintln!("attach not possible here (Yama ptrace_scope {scope}); checked the explanation instead");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "attach failed: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("attach --json prints JSON");
    assert_eq!(report["pid"], target.pid);
    assert_eq!(report["already_loaded"], false);
    assert_eq!(report["library"], lib.canonicalize().unwrap().to_str().unwrap());
    let pause = report["pause_ms"].as_f64().expect("pause_ms");
    assert!(pause > 0.0, "a pause was measured");
    eprintln!("{mode}: pause {pause} ms, call {} ms", report["call_ms"]);

    // The constructor ran inside the target.
    assert_eq!(wait_for_file(&marker), format!("loaded {} 3.0\n", target.pid));
    let maps = maps_of(target.pid);
    assert!(maps.contains(lib.canonicalize().unwrap().to_str().unwrap()), "library mapped in the target");

    // Detach: the agent's detach function runs, the app keeps going.
    let detach = run_with_timeout(userbpf().args(["detach", &target.pid.to_string()]));
    let (stdout, stderr) = texts(&detach);
    assert_eq!(detach.status.code(), Some(0), "detach failed: {stderr}");
    assert!(stdout.contains("7 probe(s) removed"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!("loaded {pid} 3.0\ndetached {pid} 3.0\n", pid = target.pid)
    );

    // Attaching again re-attaches the loaded agent's probes (no second copy).
    let again = run_with_timeout(userbpf().args(["attach", &target.pid.to_string()]).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(again.status.code(), Some(0));
    assert!(texts(&again).0.contains("already has") && texts(&again).0.contains("re-attached 5 probe(s)"), "{:?}", texts(&again));
    assert!(std::fs::read_to_string(&marker).unwrap().ends_with(&format!("reattached {} 3.0\n", target.pid)));
    let maps = maps_of(target.pid);
    let copies = maps.lines().filter(|l| l.ends_with("/libagent.so") && l.contains(" 00000000 ")).count();
    assert_eq!(copies, 1, "one copy of the agent");

    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(target.is_running(), "target still running after attach and detach");
    let (code, err) = target.finish();
    assert_eq!(code, Some(0), "target detected a change in its state: {err}");
}

#[test]
fn attach_to_a_thread_sleeping_in_nanosleep() {
    attach_and_check("sleep");
}

#[test]
fn attach_to_a_thread_spinning_in_fp_code() {
    attach_and_check("spin");
}

#[test]
fn attach_to_a_multithreaded_process() {
    attach_and_check("threads");
}

#[test]
fn attach_while_the_app_receives_signals_every_200us() {
    attach_and_check("signals");
}

#[test]
fn attach_to_a_process_whose_main_thread_exited() {
    attach_and_check("exitmain");
}

#[test]
fn attach_to_a_thread_blocked_in_read() {
    attach_and_check("read");
}

#[test]
fn attach_reports_the_loaders_error_and_leaves_the_app_running() {
    if let Some(scope) = yama_blocks_attach() {
        panic!("Yama ptrace_scope {scope} forbids attaching here: run as root, or lower kernel.yama.ptrace_scope");
    }
    let scratch = Scratch::new("attach-bad-lib");
    let target_bin = build_target(&scratch);
    let not_a_library = scratch.path("libbroken.so");
    std::fs::write(&not_a_library, b"this is not an ELF file").unwrap();
    let mut target = Target::start(&target_bin, &scratch, "sleep", &scratch.path("marker"));
    let out = run_with_timeout(userbpf().args(["attach", "--library"]).arg(&not_a_library).arg(target.pid.to_string()));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused") && stderr.contains("libbroken.so"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(target.is_running());
    let (code, err) = target.finish();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn attach_and_detach_fail_clearly() {
    let scratch = Scratch::new("attach-errors");
    build_marker_lib(&scratch, "libagent.so");
    // No such process.
    let out = run_with_timeout(userbpf().args(["attach", "999999999"]).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(out.status.code(), Some(4));
    assert!(texts(&out).1.starts_with("userbpf: no process with pid 999999999\nhint: "), "{:?}", texts(&out));

    // Detach from a process without an agent.
    let target_bin = build_target(&scratch);
    let target = Target::start(&target_bin, &scratch, "sleep", &scratch.path("marker"));
    let out = run_with_timeout(userbpf().args(["detach", &target.pid.to_string()]));
    assert_eq!(out.status.code(), Some(4));
    assert!(texts(&out).1.contains("has no userbpf agent loaded"), "{:?}", texts(&out));
    let (code, _) = target.finish();
    assert_eq!(code, Some(0));
}

#[test]
fn detach_needs_the_agents_detach_function() {
    if let Some(scope) = yama_blocks_attach() {
        panic!("Yama ptrace_scope {scope} forbids attaching here: run as root, or lower kernel.yama.ptrace_scope");
    }
    let scratch = Scratch::new("detach-old-agent");
    let target_bin = build_target(&scratch);
    // An "agent" without userbpf_agent_detach.
    let lib = scratch.path("libagent.so");
    let src = scratch.path("old_agent.c");
    std::fs::write(&src, "int userbpf_agent_version(void) { return 0; }\n").unwrap();
    let status = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&src).status().unwrap();
    assert!(status.success());
    let target = Target::start(&target_bin, &scratch, "sleep", &scratch.path("marker"));
    let out = run_with_timeout(userbpf().args(["attach", &target.pid.to_string()]).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    // Attaching again: loaded already, and no re-attach function to call.
    let again = run_with_timeout(userbpf().args(["attach", &target.pid.to_string()]).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(again.status.code(), Some(0));
    assert!(texts(&again).0.contains("already has") && texts(&again).0.ends_with("nothing to do\n"), "{:?}", texts(&again));
    let out = run_with_timeout(userbpf().args(["detach", &target.pid.to_string()]));
    assert_eq!(out.status.code(), Some(3));
    assert!(texts(&out).1.contains("does not export userbpf_agent_detach"), "{:?}", texts(&out));
    let (code, err) = target.finish();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_library_replaced_on_disk_is_not_called_into() {
    if let Some(scope) = yama_blocks_attach() {
        panic!("Yama ptrace_scope {scope} forbids attaching here: run as root, or lower kernel.yama.ptrace_scope");
    }
    let scratch = Scratch::new("replaced-lib");
    let target_bin = build_target(&scratch);
    let lib = build_marker_lib(&scratch, "libagent.so");
    let marker = scratch.path("marker");
    let target = Target::start(&target_bin, &scratch, "sleep", &marker);
    let out = run_with_timeout(userbpf().args(["attach", &target.pid.to_string()]).env("USERBPF_LIB_DIR", &scratch.0));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    // Replace the file (new inode, as a package upgrade does) with another build.
    let other = scratch.path("libagent-other.so");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/marker_lib.c");
    let status = std::process::Command::new("cc").args(["-O0", "-shared", "-fPIC", "-o"]).arg(&other).arg(&src).status().unwrap();
    assert!(status.success());
    std::fs::rename(&other, &lib).unwrap();
    let out = run_with_timeout(userbpf().args(["detach", &target.pid.to_string()]));
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("differs from") && stderr.contains("libagent.so on disk"), "{stderr}");
    assert!(!std::fs::read_to_string(&marker).unwrap().contains("detached"), "nothing was called");
    let (code, err) = target.finish();
    assert_eq!(code, Some(0), "{err}");
}
