//! A probe on every process running a file (no `-p`) fires only where the
//! agent runs on the loader's registry. With stock bpftrace, the loader
//! names, once, the processes of its user that run the file but cannot fire
//! the probe, and why: no agent, or an agent on another registry; an app
//! traced correctly is not named. Loader and apps as an ordinary user.

use std::time::Duration;

use tests::World;

#[test]
fn processes_that_cannot_fire_a_probe_are_named_with_the_reason() {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let looping = ["10", "0", "1000", "1"];
    let mut untraced = world.spawn_app_untraced(&looping).expect("spawn app without the agent");
    let other = world.dir.join("other-registry");
    let mut elsewhere = world.spawn_app_on_registry(&other, &looping).expect("spawn app on another registry");
    let mut traced = world.spawn_app(&looping).expect("spawn traced app");
    // Let the agents start before the loader looks.
    std::thread::sleep(Duration::from_millis(300));
    let out = world
        .spawn_bpftrace("uprobe:{APP}:add2 { @n = count(); } interval:s:1 { exit(); }", &[])
        .expect("spawn bpftrace")
        .wait_timeout(Duration::from_secs(30));
    for p in [&mut untraced, &mut elsewhere, &mut traced] {
        p.signal(libc::SIGKILL);
    }
    let app = world.app.display().to_string();
    let stderr = &out.stderr;
    assert!(
        stderr.contains(&format!(
            "userbpf: {app} runs in process {} without libagent.so, so its probes cannot fire there: start the app with `userbpf run`",
            untraced.pid()
        )),
        "{out:?}"
    );
    assert!(
        stderr.contains(&format!(
            "userbpf: {app} runs in process {} ({}) whose agent uses another registry than this loader's ({}), so its probes cannot fire there",
            elsewhere.pid(),
            other.display(),
            world.registry.display()
        )),
        "{out:?}"
    );
    assert!(!stderr.contains(&format!(" {} ", traced.pid())) && !stderr.contains(&format!(" {},", traced.pid())), "the traced app is not named: {out:?}");
    assert_eq!(stderr.matches("without libagent.so").count(), 1, "said once: {out:?}");
    assert!(out.stdout.contains("@n: "), "the traced app was counted: {out:?}");
}
