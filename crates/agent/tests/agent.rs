//! End-to-end tests of `libagent.so` in a real C application: programs,
//! maps and attachments are created in a temporary registry through the
//! shm-maps API (as the syscall server would), the app runs with the agent
//! preloaded, and the results are read back from the shared maps.

mod common;

use std::time::Duration;

use common::*;
use shm_maps::{LinkKind, Map, Registry};

#[test]
fn counts_every_call_of_a_probed_function() {
    let reg = TestRegistry::new("count");
    let map = count_map(&reg.registry);
    let prog = count_program(&reg.registry, &map);
    attach(&reg.registry, prog, "target_func", LinkKind::Uprobe, true);
    run_app(&reg, &["count", "1000"]);
    assert_eq!(percpu_sum(&map, 0), 1000);
}

#[test]
fn uretprobes_fire_on_return() {
    let reg = TestRegistry::new("uretprobe");
    let map = count_map(&reg.registry);
    let prog = count_program(&reg.registry, &map);
    attach(&reg.registry, prog, "target_func", LinkKind::Uretprobe, true);
    run_app(&reg, &["count", "250"]);
    assert_eq!(percpu_sum(&map, 0), 250);
}

#[test]
fn disabled_attachments_do_not_fire_and_no_registry_is_harmless() {
    let reg = TestRegistry::new("disabled");
    let map = count_map(&reg.registry);
    let prog = count_program(&reg.registry, &map);
    attach(&reg.registry, prog, "target_func", LinkKind::Uprobe, false);
    run_app(&reg, &["count", "100"]);
    assert_eq!(percpu_sum(&map, 0), 0);

    // An unusable registry: one line on stderr, the app runs normally.
    let mut cmd = app_command(&reg, &["count", "10"]);
    cmd.env("USERBPF_DIR", "/proc/version/not-a-dir");
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("done"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("registry unusable"), "{stderr}");
    // ... and nothing at all with USERBPF_QUIET.
    let mut cmd = app_command(&reg, &["count", "10"]);
    cmd.env("USERBPF_DIR", "/proc/version/not-a-dir").env("USERBPF_QUIET", "1");
    let out = cmd.output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty());
}

#[test]
fn attach_and_detach_while_running() {
    let reg = TestRegistry::new("live");
    let map = count_map(&reg.registry);
    let prog = count_program(&reg.registry, &map);
    let _app = RunningApp::start(&reg, &["loop"]);
    let link = attach(&reg.registry, prog, "target_func", LinkKind::Uprobe, false);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(percpu_sum(&map, 0), 0, "disabled probe fired");

    reg.registry.set_link_enabled(link, true).unwrap();
    let took = wait_for(Duration::from_secs(5), || percpu_sum(&map, 0) > 0);
    println!("enable took effect after {took:?}");
    assert!(took.is_some(), "enabled probe never fired");

    reg.registry.set_link_enabled(link, false).unwrap();
    // Once the count stops moving for 100 ms the probe is gone.
    let mut last = percpu_sum(&map, 0);
    let settled = wait_for(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(100));
        let now = percpu_sum(&map, 0);
        let still = now == last;
        last = now;
        still
    });
    assert!(settled.is_some(), "disabled probe kept firing");

    reg.registry.remove_link(link).unwrap();
    let again = attach(&reg.registry, prog, "target_func", LinkKind::Uprobe, true);
    let before = percpu_sum(&map, 0);
    assert!(wait_for(Duration::from_secs(5), || percpu_sum(&map, 0) > before).is_some(), "re-attach failed");
    reg.registry.remove_link(again).unwrap();
}

#[test]
fn forked_children_keep_their_probes() {
    let reg = TestRegistry::new("fork");
    let map = count_map(&reg.registry);
    let prog = count_program(&reg.registry, &map);
    attach(&reg.registry, prog, "target_func", LinkKind::Uprobe, true);
    run_app(&reg, &["fork", "300"]);
    assert_eq!(percpu_sum(&map, 0), 300);
}

#[test]
fn detach_and_reattach_entry_points() {
    let reg = TestRegistry::new("detach");
    let map = count_map(&reg.registry);
    let prog = count_program(&reg.registry, &map);
    attach(&reg.registry, prog, "target_func", LinkKind::Uprobe, true);
    run_app(&reg, &["detach", "40"]);
    // Counted before the detach and after the reattach, not in between.
    assert_eq!(percpu_sum(&map, 0), 80);
}

#[test]
fn perf_event_output_reaches_the_loaders_ring() {
    let reg = TestRegistry::new("perf");
    let ncpus = shm_maps::cpu::nr_possible();
    let events = reg
        .registry
        .create_map(&shm_maps::MapSpec {
            map_type: shm_maps::map_type::PERF_EVENT_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: ncpus,
            name: "printf".into(),
            ..Default::default()
        })
        .unwrap();
    let rings: Vec<shm_maps::PerfRing> = (0..ncpus).map(|_| reg.registry.create_perf_ring(8).unwrap()).collect();
    for (cpu, ring) in rings.iter().enumerate() {
        events.update(&(cpu as u32).to_le_bytes(), &ring.id().to_le_bytes(), 0).unwrap();
    }
    let e = events.id();
    // Send { arg0 } to the current CPU's ring.
    let text = format!(
        "
        ldxdw %r6, [%r1+112]
        stxdw [%r10-8], %r6
        mov %r4, %r10
        add %r4, -8
        lddw %r2, map_fd({e})
        lddw %r3, 0xffffffff
        mov %r5, 8
        call bpf_perf_event_output
        mov %r0, 0
        exit
        "
    );
    let prog = store_program(&reg.registry, "printf", &text, &[e]);
    attach(&reg.registry, prog, "target_func", LinkKind::Uprobe, true);
    run_app(&reg, &["count", "20"]);
    let mut seen = Vec::new();
    for ring in &rings {
        ring.read(|record| {
            if let shm_maps::PerfRecord::Sample(raw) = record {
                seen.push(u64::from_le_bytes(raw[..8].try_into().unwrap()));
            }
        });
    }
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
}

#[test]
fn libraries_dlopened_later_get_their_probes() {
    let reg = TestRegistry::new("dlopen");
    let map = count_map(&reg.registry);
    let prog = count_program(&reg.registry, &map);
    let plugin = plugin_library();
    attach_file(&reg.registry, prog, plugin, "plugin_func", -1);
    let app = RunningApp::start(&reg, &["dlopen", plugin.to_str().unwrap()]);
    let took = wait_for(Duration::from_secs(10), || percpu_sum(&map, 0) > 0);
    println!("probe in the dlopened library fired after {took:?}");
    assert!(took.is_some(), "probe on a dlopened library never fired");
    app.finish();
}

#[test]
fn pid_filters_are_respected() {
    let reg = TestRegistry::new("pid");
    let mine = count_map(&reg.registry);
    let other = count_map(&reg.registry);
    let prog_mine = count_program(&reg.registry, &mine);
    let prog_other = count_program(&reg.registry, &other);
    let app = RunningApp::start(&reg, &["loop"]);
    attach_file(&reg.registry, prog_mine, target_app(), "target_func", app.pid());
    // A pid that is not the app's (ours).
    attach_file(&reg.registry, prog_other, target_app(), "target_func", std::process::id() as i32);
    assert!(wait_for(Duration::from_secs(10), || percpu_sum(&mine, 0) > 20).is_some(), "pid-filtered probe never fired");
    assert_eq!(percpu_sum(&other, 0), 0, "a probe for another pid fired");
}

#[test]
fn a_forked_child_does_not_run_probes_filtered_to_its_parent() {
    let reg = TestRegistry::new("forkpid");
    let counts = count_map(&reg.registry);
    let ready = count_map(&reg.registry);
    let count_prog = count_program(&reg.registry, &counts);
    let ready_prog = count_program(&reg.registry, &ready);
    let mut app = RunningApp::start(&reg, &["forkwait", "50"]);
    attach_file(&reg.registry, count_prog, target_app(), "target_func", app.pid());
    attach_file(&reg.registry, ready_prog, target_app(), "target_ptr", -1);
    // Both links are attached in order; once the second fires, go.
    assert!(wait_for(Duration::from_secs(10), || percpu_sum(&ready, 0) > 0).is_some(), "probes never attached");
    use std::io::Write;
    app.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let status = app.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The parent's 50 calls only, not the child's.
    assert_eq!(percpu_sum(&counts, 0), 50);
}

#[test]
fn trace_printk_lines_go_to_the_registry_trace_pipe() {
    let reg = TestRegistry::new("printk");
    // bpf_trace_printk("x=%d\n", 6, arg0): the format lives on the stack.
    let text = "
        ldxdw %r3, [%r1+112]
        lddw %r1, 0x0a64253d78
        stxdw [%r10-8], %r1
        mov %r1, %r10
        add %r1, -8
        mov %r2, 6
        call bpf_trace_printk
        mov %r0, 0
        exit
    ";
    let prog = store_program(&reg.registry, "printk", text, &[]);
    attach(&reg.registry, prog, "target_func", LinkKind::Uprobe, true);
    run_app(&reg, &["count", "3"]);
    let pipe = std::fs::read_to_string(reg.dir.join("trace_pipe")).unwrap();
    let messages: Vec<&str> = pipe.lines().filter_map(|l| l.split(": bpf_trace_printk: ").nth(1)).collect();
    assert_eq!(messages, ["x=0", "x=1", "x=2"], "{pipe}");
    assert!(pipe.lines().all(|l| l.trim_start().starts_with("agent-test-targ")), "{pipe}");
}

#[test]
fn exec_loads_the_agent_again() {
    let reg = TestRegistry::new("exec");
    let map = count_map(&reg.registry);
    let prog = count_program(&reg.registry, &map);
    attach(&reg.registry, prog, "target_func", LinkKind::Uprobe, true);
    run_app(&reg, &["exec", "77"]);
    assert_eq!(percpu_sum(&map, 0), 77);
}

#[test]
fn bad_pointers_in_probe_read_return_efault_without_crashing() {
    let reg = TestRegistry::new("badptr");
    let map = count_map(&reg.registry);
    let prog = probe_read_result_program(&reg.registry, &map);
    attach(&reg.registry, prog, "target_ptr", LinkKind::Uprobe, true);
    run_app(&reg, &["badptr"]);
    let efault = (-(libc::EFAULT as i64)) as u64;
    // Per-CPU sums of one write: the value on one CPU, zero elsewhere.
    assert_eq!(percpu_sum(&map, 0x10), efault);
    assert_eq!(percpu_sum(&map, u64::MAX), efault);
    let mut key = [0u8; 8];
    let mut good = 0;
    let mut prev: Option<[u8; 8]> = None;
    while map.get_next_key(prev.as_ref().map(|k| &k[..]), &mut key).is_ok() {
        let k = u64::from_le_bytes(key);
        if k != 0x10 && k != u64::MAX {
            assert_eq!(percpu_sum(&map, k), 0, "good pointer read failed");
            good += 1;
        }
        prev = Some(key);
    }
    assert_eq!(good, 1);
}

#[test]
fn an_application_sigsegv_handler_installed_later_neither_breaks_probe_reads_nor_changes() {
    let reg = TestRegistry::new("sigsegv");
    let map = count_map(&reg.registry);
    let prog = probe_read_result_program(&reg.registry, &map);
    attach(&reg.registry, prog, "target_ptr", LinkKind::Uprobe, true);
    // The app sees its own handler, the probe's bad read is -EFAULT (not
    // the app's handler), and the app's real fault reaches its handler.
    let out = app_command(&reg, &["sigsegv"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?} {stdout} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "done segv-handled");
    assert_eq!(percpu_sum(&map, 0x10), (-(libc::EFAULT as i64)) as u64);
}

#[test]
fn a_dead_loaders_probes_are_removed() {
    if std::env::var_os("USERBPF_AGENT_TEST_LOADER").is_some() {
        return; // this process is the helper loader below, not the test
    }
    let reg = TestRegistry::new("owner");
    let map = count_map(&reg.registry);
    let prog = count_program(&reg.registry, &map);
    let _app = RunningApp::start(&reg, &["loop"]);
    // A separate loader process owns the attachment, then is SIGKILLed.
    let mut loader = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "loader_process", "--nocapture", "--include-ignored"])
        .env("USERBPF_AGENT_TEST_LOADER", &reg.dir)
        .env("USERBPF_AGENT_TEST_PROG", prog.to_string())
        .env("USERBPF_AGENT_TEST_APP", target_app())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || percpu_sum(&map, 0) > 0).is_some(), "loader's probe never fired");
    loader.kill().unwrap();
    loader.wait().unwrap();
    let mut last = percpu_sum(&map, 0);
    let stopped = wait_for(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = percpu_sum(&map, 0);
        let still = now == last;
        last = now;
        still
    });
    println!("probes stopped {stopped:?} (+50 ms of observation) after the loader died");
    assert!(stopped.is_some(), "probe kept firing after its loader died");
}

/// Not a test: the loader process of `a_dead_loaders_probes_are_removed`.
#[test]
#[ignore = "helper process, run by a_dead_loaders_probes_are_removed"]
fn loader_process() {
    let Some(dir) = std::env::var_os("USERBPF_AGENT_TEST_LOADER") else { return };
    let registry = shm_maps::Registry::open(std::path::Path::new(&dir)).unwrap();
    let prog: u32 = std::env::var("USERBPF_AGENT_TEST_PROG").unwrap().parse().unwrap();
    attach(&registry, prog, "target_func", LinkKind::Uprobe, true);
    std::thread::sleep(Duration::from_secs(60));
}

/// Stores `map[arg0] = bpf_probe_read_user(&buf, 8, arg0)`: the key is the
/// pointer the probed function got, the value the helper's result (0 or
/// -EFAULT).
fn probe_read_result_program(registry: &Registry, map: &Map) -> u32 {
    let m = map.id();
    let text = format!(
        "
        ldxdw %r6, [%r1+112]
        stxdw [%r10-8], %r6
        mov %r1, %r10
        add %r1, -24
        mov %r2, 8
        mov %r3, %r6
        call bpf_probe_read_user
        stxdw [%r10-16], %r0
        lddw %r1, map_fd({m})
        mov %r2, %r10
        add %r2, -8
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        call bpf_map_update_elem
        mov %r0, 0
        exit
        "
    );
    store_program(registry, "badptr", &text, &[m])
}
