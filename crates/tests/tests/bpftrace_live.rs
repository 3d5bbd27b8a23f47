//! bpftrace against an app that is already running (`-p PID`), ended with
//! Ctrl-C, and two bpftrace runs on the same app at once. Loader and target
//! run as an ordinary user; expected outputs (`expected/live_*.out`) are what
//! kernel bpftrace printed for the same scripts and app, e.g.
//! `sample 10 0 1000 1 & bpftrace -e '<script>' -p $!` as root.
//!
//! Every test runs under bpftrace 0.17, 0.23 and 0.27 (`tests::Bpftrace`).
//! For 0.23 and 0.27 bpftrace runs inside its Debian chroot while the app
//! runs outside, both naming the same executable (one inode, two paths)
//! and the same registry; their expected outputs are in
//! `expected/bpftrace-<version>/`, from the same commands as root with the
//! chroot's bpftrace.

use std::time::Duration;

use tests::{mismatch, normalize, run_uid, Bpftrace, Proc, World};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn expected(world: &World, name: &str) -> String {
    let p = world.bpftrace.expected_dir().join(format!("{name}.out"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn world(version: &str) -> World {
    Bpftrace::release(version)
        .and_then(World::with)
        .unwrap_or_else(|e| panic!("e2e setup: {e}"))
}

/// One test per release of each scenario below.
macro_rules! per_release {
    ($($name:ident),* $(,)?) => {
        mod bpftrace_0_17 { $( #[test] fn $name() { super::$name(super::world("0.17")); } )* }
        mod bpftrace_0_23 { $( #[test] fn $name() { super::$name(super::world("0.23")); } )* }
        mod bpftrace_0_27 { $( #[test] fn $name() { super::$name(super::world("0.27")); } )* }
    };
}

per_release!(
    attach_by_pid_with_exit,
    ctrl_c_prints_maps,
    two_loaders_on_one_app_see_only_their_own_maps,
    killed_loader_detaches_its_probes,
);

/// The sample app looping forever over 10 iterations, 1 ms apart.
fn running_app(world: &World) -> Proc {
    let app = world
        .spawn_app(&["10", "0", "1000", "1"])
        .unwrap_or_else(|e| panic!("e2e setup: {e}"));
    // Let the agent start (its registry watcher) before attaching.
    std::thread::sleep(Duration::from_millis(200));
    app
}

fn assert_output(world: &World, name: &str, out: &tests::Output) {
    let uid = run_uid();
    let want = normalize(&expected(world, name), None, uid);
    let got = normalize(&out.stdout, Some(&world.inner), uid);
    assert_eq!(
        got,
        want,
        "{name} under bpftrace {}\n{}",
        world.bpftrace.version,
        mismatch(&want, &got, out)
    );
    assert_eq!(
        out.status,
        Some(0),
        "{name}: bpftrace exit status\n{}",
        mismatch(&want, &got, out)
    );
}

fn attach_by_pid_with_exit(world: World) {
    let app = running_app(&world);
    let bt = world
        .spawn_bpftrace(
            r#"uprobe:{APP}:add2 /arg0 == 7/ { printf("seen %d\n", arg0); exit(); }"#,
            &["-p".into(), app.pid().to_string()],
        )
        .expect("spawn bpftrace");
    let out = bt.wait_timeout(STEP_TIMEOUT);
    assert_output(&world, "live_attach_pid", &out);
}

fn ctrl_c_prints_maps(world: World) {
    let app = running_app(&world);
    let mut bt = world
        .spawn_bpftrace(
            "uprobe:{APP}:add2 { @max = max(arg0); @min = min(arg0); }",
            &["-p".into(), app.pid().to_string()],
        )
        .expect("spawn bpftrace");
    assert!(
        bt.wait_for_attach(STEP_TIMEOUT),
        "bpftrace never attached: {}",
        bt.stderr_now()
    );
    // Several full rounds of 0..9 (10 ms each).
    std::thread::sleep(Duration::from_millis(500));
    bt.signal(libc::SIGINT);
    let out = bt.wait_timeout(STEP_TIMEOUT);
    assert_output(&world, "live_ctrl_c", &out);
    // Closing the perf event fds removed the attachment: the app's code is
    // back to the original.
    assert!(
        wait_until(STEP_TIMEOUT, || !add2_patched(&world, &app)),
        "add2 still patched after bpftrace exited"
    );
}

fn two_loaders_on_one_app_see_only_their_own_maps(world: World) {
    let app = running_app(&world);
    let pid = app.pid().to_string();
    // Both scripts use a map named @x; each must print its own value.
    let a = world
        .spawn_bpftrace(
            "uprobe:{APP}:add2 /arg0 == 3/ { @x = max(arg0); exit(); }",
            &["-p".into(), pid.clone()],
        )
        .expect("spawn bpftrace A");
    let b = world
        .spawn_bpftrace(
            "uprobe:{APP}:work_large /arg0 == 5/ { @x = max(arg0 * 10); exit(); }",
            &["-p".into(), pid],
        )
        .expect("spawn bpftrace B");
    let out_a = a.wait_timeout(STEP_TIMEOUT);
    let out_b = b.wait_timeout(STEP_TIMEOUT);
    assert_output(&world, "live_concurrent_a", &out_a);
    assert_output(&world, "live_concurrent_b", &out_b);
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Whether `add2`'s first bytes in the app's memory differ from the file's.
fn add2_patched(world: &World, app: &Proc) -> bool {
    let (disk, mem) =
        tests::function_bytes(app.pid(), &world.app, "add2", 16).unwrap_or_else(|e| panic!("{e}"));
    disk != mem
}

fn killed_loader_detaches_its_probes(world: World) {
    let app = running_app(&world);
    assert!(!add2_patched(&world, &app), "add2 patched before any probe");
    let mut bt = world
        .spawn_bpftrace(
            "uprobe:{APP}:add2 { @c = count(); }",
            &["-p".into(), app.pid().to_string()],
        )
        .expect("spawn bpftrace");
    assert!(
        bt.wait_for_attach(STEP_TIMEOUT),
        "bpftrace never attached: {}",
        bt.stderr_now()
    );
    assert!(
        wait_until(STEP_TIMEOUT, || add2_patched(&world, &app)),
        "the agent never patched add2"
    );
    // SIGKILL: bpftrace closes nothing; the registry's owner liveness must
    // make the agent take the probe out of the app's code.
    bt.signal(libc::SIGKILL);
    let _ = bt.wait_timeout(STEP_TIMEOUT);
    assert!(
        wait_until(Duration::from_secs(15), || !add2_patched(&world, &app)),
        "add2 is still patched after its loader was SIGKILLed"
    );
}
