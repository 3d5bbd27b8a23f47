//! Stock tools shipped with bpftrace that trace user space, unmodified:
//! `/usr/sbin/gethostlatency.bt` (uprobes/uretprobes on libc by library
//! name) and `/usr/sbin/bashreadline.bt` (uretprobe on `/bin/bash:readline`).
//! Loader and targets run as an ordinary user. Expected outputs are what
//! kernel bpftrace printed for the same targets (`expected/tool_*.out`);
//! times, pids and latencies are masked ([`tests::normalize_tool_output`]).

use std::path::Path;
use std::time::Duration;

use tests::{expected_dir, mismatch, normalize_tool_output, World};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn expected(name: &str) -> String {
    let p = expected_dir().join(format!("{name}.out"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn gethostlatency_bt() {
    let tool = "/usr/sbin/gethostlatency.bt";
    assert!(
        Path::new(tool).exists(),
        "{tool} is not installed (Debian package bpftrace; scripts/setup.sh installs it)"
    );
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let resolver = world
        .compile_app("resolver")
        .unwrap_or_else(|e| panic!("e2e setup: {e}"));
    // bpftrace reads the script file itself; pass it as the program argument.
    let bt = world
        .spawn_bpftrace_file(tool, &["-c".into(), format!("{} 2", resolver.display())])
        .expect("spawn bpftrace");
    let out = bt.wait_timeout(STEP_TIMEOUT);
    // Column 3 is the latency in ms.
    let want = normalize_tool_output(&expected("tool_gethostlatency"), &[3]);
    let got = normalize_tool_output(&out.stdout, &[3]);
    assert_eq!(got, want, "{}", mismatch(&want, &got, &out));
    assert_eq!(out.status, Some(0), "{}", mismatch(&want, &got, &out));
}

#[test]
fn bashreadline_bt() {
    let tool = "/usr/sbin/bashreadline.bt";
    assert!(
        Path::new(tool).exists() && Path::new("/usr/bin/script").exists(),
        "{tool} or script(1) is not installed (Debian packages bpftrace, util-linux; scripts/setup.sh installs them)"
    );
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let mut bt = world
        .spawn_bpftrace_file(tool, &[])
        .expect("spawn bpftrace");
    assert!(
        bt.wait_for_stdout("COMMAND", STEP_TIMEOUT),
        "bpftrace never started: {}",
        bt.stderr_now()
    );
    // An interactive bash on a pseudo-terminal (readline only runs on a
    // tty), with the agent, typing two commands.
    let bash = world
        .spawn_with_agent(
            "/usr/bin/script",
            &["-qfc", "bash --norc --noprofile -i", "/dev/null"],
            Some(b"echo hello-from-bash\nexit\n"),
        )
        .expect("spawn bash");
    let bash_out = bash.wait_timeout(STEP_TIMEOUT);
    assert!(
        !bash_out.timed_out,
        "bash did not exit: {}",
        bash_out.stderr
    );
    assert!(
        bt.wait_for_stdout(" exit\n", STEP_TIMEOUT),
        "readline returns not seen: {}",
        bt.stdout_now()
    );
    bt.signal(libc::SIGINT);
    let out = bt.wait_timeout(STEP_TIMEOUT);
    let want = normalize_tool_output(&expected("tool_bashreadline"), &[]);
    let got = normalize_tool_output(&out.stdout, &[]);
    assert_eq!(got, want, "{}", mismatch(&want, &got, &out));
}
