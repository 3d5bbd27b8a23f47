//! `userbpf profile -- CMD`: a CPU profile of a command, sampled inside it
//! by its agent, as folded stacks and as a flame graph. The command
//! (`apps/busy.c`, frame pointers) splits its work 70/30 between `heavy`
//! and `light`: the profile's split is within 5 points of that. Everything
//! runs as an ordinary user.

use std::time::Duration;

use tests::World;

/// `busy -n N` prints its thread's CPU seconds first; the folded stacks follow.
fn cpu_and_folded(stdout: &str) -> (f64, String) {
    let mut lines = stdout.lines();
    let cpu = lines.next().and_then(|l| l.trim().parse::<f64>().ok()).unwrap_or_else(|| panic!("no CPU time: {stdout}"));
    (cpu, lines.collect::<Vec<_>>().join("\n"))
}

/// Runs `userbpf ARGS` as the test user on the world's registry.
fn userbpf(world: &World, args: &[&str]) -> tests::Output {
    let userbpf = world.dir.join("userbpf");
    if !userbpf.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_userbpf"), &userbpf).expect("copy userbpf");
    }
    world
        .spawn_plain(&userbpf, args)
        .expect("spawn userbpf")
        .wait_timeout(Duration::from_secs(60))
}

#[test]
fn profile_of_a_command_splits_as_the_command_works() {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let busy = world
        .compile_app_with("busy", &["-fno-omit-frame-pointer"])
        .expect("compile busy.c");
    // The libraries next to the binary (the world has them at its root).
    let out = userbpf(
        &world,
        &["profile", "-F", "199", "--", &busy.to_string_lossy(), "-n", "1000"],
    );
    assert_eq!(out.status, Some(0), "{out:?}");
    let (cpu, folded) = cpu_and_folded(&out.stdout);
    let (mut heavy, mut light, mut total) = (0u64, 0u64, 0u64);
    for line in folded.lines() {
        let (stack, n) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a folded line: {line:?}"));
        let n: u64 = n.parse().expect("a count");
        assert!(
            stack.starts_with("busy;"),
            "the command's name first: {line}"
        );
        total += n;
        match stack.rsplit(';').next() {
            Some("heavy") => heavy += n,
            Some("light") => light += n,
            _ => {}
        }
        if stack.ends_with(";heavy") || stack.ends_with(";light") {
            assert!(stack.contains(";main;"), "stacks reach main: {line}");
        }
    }
    // About 199 samples per second of the app's CPU (however busy the
    // machine, which the wall time would not tell).
    let expected = 199.0 * cpu;
    assert!(
        (total as f64) > 0.75 * expected && (total as f64) < 1.25 * expected,
        "{total} samples for {cpu:.2} s of CPU at 199 Hz: {}",
        out.stdout
    );
    assert!(
        heavy + light >= total * 9 / 10,
        "heavy {heavy} + light {light} of {total}: {}",
        out.stdout
    );
    let share = heavy as f64 / (heavy + light) as f64;
    assert!(
        (0.65..=0.75).contains(&share),
        "heavy's share {share:.3} (heavy {heavy}, light {light}), expected 0.70"
    );

    // Somewhere the test user may write.
    let out_dir = world.dir.join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    std::fs::set_permissions(
        &out_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let svg = out_dir.join("busy.svg");
    let out = userbpf(
        &world,
        &[
            "profile",
            "--svg",
            &svg.to_string_lossy(),
            "--",
            &busy.to_string_lossy(),
            "1",
        ],
    );
    assert_eq!(out.status, Some(0), "{out:?}");
    let text = std::fs::read_to_string(&svg).expect("the flame graph");
    assert!(text.starts_with("<?xml") && text.contains("<svg"), "an SVG");
    for frame in ["heavy", "light", "main"] {
        assert!(
            text.contains(&format!(">{frame}<")) || text.contains(&format!("{frame} (")),
            "{frame} in the flame graph"
        );
    }
    // Nothing is left in the registry.
    let left = std::fs::read_dir(world.registry.join("links"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "the profile's link is removed");
}

#[test]
fn profile_of_a_process_without_the_agent_says_how_to_load_it() {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let app = world
        .spawn_app_untraced(&["10", "0", "1000", "1"])
        .expect("spawn app");
    std::thread::sleep(Duration::from_millis(200));
    let out = userbpf(&world, &["profile", "-d", "1", &app.pid().to_string()]);
    app.signal(libc::SIGKILL);
    assert_eq!(out.status, Some(3), "{out:?}");
    assert!(
        out.stderr.contains("does not have libagent.so loaded")
            && out.stderr.contains("userbpf attach"),
        "{}",
        out.stderr
    );
}

/// Above the scheduler tick (250 Hz here) a CPU-time timer fires once per
/// tick with an overrun; each expiration is a sample, so the rate asked
/// for is the rate taken, as with the kernel's cpu-clock.
#[test]
fn profile_takes_the_rate_asked_for_above_the_scheduler_tick() {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let busy = world.compile_app_with("busy", &["-fno-omit-frame-pointer"]).expect("compile busy.c");
    let out = userbpf(&world, &["profile", "-F", "1000", "--", &busy.to_string_lossy(), "-n", "800"]);
    assert_eq!(out.status, Some(0), "{out:?}");
    let (cpu, folded) = cpu_and_folded(&out.stdout);
    let samples: u64 = folded.lines().filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok()).sum();
    let expected = 1000.0 * cpu;
    assert!(
        (samples as f64) > 0.85 * expected && (samples as f64) < 1.15 * expected,
        "{samples} samples for {cpu:.2} s of CPU at 1000 Hz"
    );
}

#[test]
fn profile_of_a_running_process_with_the_agent() {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let busy = world
        .compile_app_with("busy", &["-fno-omit-frame-pointer"])
        .expect("compile busy.c");
    let app = world
        .spawn_with_agent(&busy.to_string_lossy(), &["30"], None)
        .expect("spawn busy");
    std::thread::sleep(Duration::from_millis(300));
    let out = userbpf(&world, &["profile", "-d", "2", &app.pid().to_string()]);
    app.signal(libc::SIGKILL);
    assert_eq!(out.status, Some(0), "{out:?}");
    let heavy: u64 = out
        .stdout
        .lines()
        .filter(|l| {
            l.rsplit_once(' ')
                .is_some_and(|(s, _)| s.ends_with(";heavy"))
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert!(
        heavy > 50,
        "heavy sampled in the running process: {}",
        out.stdout
    );
}

/// `apps/storm.c`: threads in malloc/free without pause (ticks land in the
/// allocator, holding its lock), threads that live milliseconds, and a
/// thread in sigwaitinfo() for every signal. Sampled at 999 Hz, preloaded
/// and injected by `userbpf attach`, it finishes with its own result: no
/// deadlock, and the waiting thread gets only the signal the app sent.
#[test]
fn sampling_never_disturbs_an_allocating_app_or_a_signal_waiter() {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let storm = world.compile_app_with("storm", &["-fno-omit-frame-pointer", "-pthread"]).expect("compile storm.c");
    let out = userbpf(&world, &["profile", "-F", "999", "--", &storm.to_string_lossy(), "3"]);
    assert!(!out.timed_out && out.status == Some(0), "{out:?}");
    assert!(out.stderr.contains("storm: ok"), "the app's own result: {}", out.stderr);
    let samples: u64 = out.stdout.lines().filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok()).sum();
    assert!(samples > 1000, "{samples} samples: {}", out.stdout);

    // Injected into the running app (the agent's thread-local storage is then
    // allocated on each thread's first use).
    let app = world.spawn_app_untraced_path(&storm, &["6"]).expect("spawn storm");
    std::thread::sleep(Duration::from_millis(300));
    let attach = userbpf(&world, &["attach", &app.pid().to_string()]);
    assert_eq!(attach.status, Some(0), "{attach:?}");
    let out = userbpf(&world, &["profile", "-F", "999", "-d", "2", &app.pid().to_string()]);
    assert!(!out.timed_out && out.status == Some(0), "{out:?}");
    assert!(out.stdout.lines().any(|l| l.contains(";churn")), "the app's threads sampled: {}", out.stdout);
    let app_out = app.wait_timeout(Duration::from_secs(30));
    assert_eq!(app_out.status, Some(0), "{app_out:?}");
    assert!(app_out.stderr.contains("storm: ok"), "{app_out:?}");
}
