//! The agent's own work is invisible to probes and cannot crash the app:
//! probes on every libc function `libagent.so` itself calls (its undefined
//! dynamic symbols that libc defines, read from the built library, so the
//! list follows the code), attached while the app runs and before it
//! starts. The app must survive, and with a pid filter the counts must be
//! the app's own calls only, as the kernel would count them.
//!
//! Also: application handlers of the signals userbpf owns (SIGTRAP,
//! SIGSEGV, SIGRTMAX-1), installed after attach, get exactly the
//! application's signals while live patching keeps working.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use shm_maps::{LinkKind, LinkRecord, Map, Registry};

/// libc functions the agent's own code calls: the undefined function
/// symbols of `libagent.so` that `libc` defines. `gettid` is added: the
/// probe path once called it before its re-entrancy guard was up.
fn agent_libc_calls(libc: &Path) -> Vec<String> {
    let bytes = std::fs::read(agent_library()).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).expect("parse libagent.so");
    let defined: std::collections::HashSet<String> =
        rewriter::elf::list_functions(libc).unwrap().into_iter().map(|f| f.name).collect();
    let mut names: Vec<String> = elf
        .dynsyms
        .iter()
        .filter(|s| s.st_shndx == 0 && s.st_type() == goblin::elf::sym::STT_FUNC)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name).map(str::to_owned))
        .chain(["gettid".to_owned()])
        .filter(|n| defined.contains(n))
        .collect();
    names.sort();
    names.dedup();
    for expected in ["malloc", "free", "read", "getpid", "opendir", "readdir64", "pthread_create", "syscall"] {
        assert!(names.iter().any(|n| n == expected), "libagent.so no longer imports {expected}: {names:?}");
    }
    names
}

/// The libc the test (and so the app) maps.
fn libc_path() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().is_some_and(|n| n.to_string_lossy().starts_with("libc.so")))
        .map(PathBuf::from)
        .expect("libc mapped")
}

/// `@[cookie] = count()`: one map key per probe (the link's cookie).
fn count_by_cookie_program(registry: &Registry, map: &Map) -> u32 {
    let m = map.id();
    let text = format!(
        "
        call bpf_get_attach_cookie
        stxdw [%r10-8], %r0
        {}",
        vm::fixtures::count_key_at_fp_minus_8(m)
    );
    store_program(registry, "count_by_cookie", &text, &[m])
}

/// Links on `names` of `libc`, cookie = index + 1, firing only in `pid`.
fn attach_libc(registry: &Registry, prog: u32, libc: &Path, names: &[String], pid: i32) {
    let meta = std::fs::metadata(libc).unwrap();
    let functions: BTreeMap<String, u64> =
        rewriter::elf::list_functions(libc).unwrap().into_iter().map(|f| (f.name, f.file_offset)).collect();
    for (i, name) in names.iter().enumerate() {
        registry
            .create_link(&LinkRecord {
                kind: LinkKind::Uprobe,
                prog_id: prog,
                enabled: true,
                pid,
                cookie: i as u64 + 1,
                target_path: libc.display().to_string(),
                file_offset: functions[name],
                dev: meta.dev(),
                inode: meta.ino(),
                ..Default::default()
            })
            .unwrap();
    }
}

/// A probe on the app's `symbol`, counted under key `cookie`.
fn app_link(registry: &Registry, prog: u32, symbol: &str, cookie: u64, pid: i32) -> u32 {
    let app = target_app();
    let meta = std::fs::metadata(app).unwrap();
    registry
        .create_link(&LinkRecord {
            kind: LinkKind::Uprobe,
            prog_id: prog,
            enabled: true,
            pid,
            cookie,
            target_path: app.display().to_string(),
            file_offset: symbol_offset(symbol),
            dev: meta.dev(),
            inode: meta.ino(),
            ..Default::default()
        })
        .unwrap()
}

/// A probe on the app's `target_func`, counted under key 0.
fn attach_target(registry: &Registry, prog: u32, pid: i32) -> u32 {
    app_link(registry, prog, "target_func", 0, pid)
}

fn counted(map: &Map, names: &[String]) -> BTreeMap<String, u64> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), percpu_sum(map, i as u64 + 1)))
        .filter(|(_, c)| *c != 0)
        .collect()
}

/// Make the agent patch and unpatch (rendezvous, breakpoints in flight,
/// `/proc/self/task` walks) a few times while the libc probes are live.
fn churn(registry: &Registry, prog: u32, pid: i32) {
    for _ in 0..3 {
        let link = attach_target(registry, prog, pid);
        std::thread::sleep(Duration::from_millis(150));
        registry.remove_link(link).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// A registry with a count-by-cookie program, and the libc functions the
/// agent calls (not yet attached).
struct LibcProbes {
    libc: PathBuf,
    names: Vec<String>,
    reg: TestRegistry,
    map: Map,
    prog: u32,
}

impl LibcProbes {
    fn new(tag: &str) -> LibcProbes {
        let libc = libc_path();
        let names = agent_libc_calls(&libc);
        let reg = TestRegistry::new(tag);
        let map = count_map(&reg.registry);
        let prog = count_by_cookie_program(&reg.registry, &map);
        LibcProbes { libc, names, reg, map, prog }
    }
}

#[test]
fn live_probes_on_every_libc_function_the_agent_calls_do_not_crash_it_or_count_its_calls() {
    let LibcProbes { libc, names, reg, map, prog } = LibcProbes::new("own-calls-live");
    let mut app = RunningApp::start(&reg, &["spin"]);
    let pid = app.pid();
    attach_libc(&reg.registry, prog, &libc, &names, pid);
    // Created last: once it fires, the agent has processed every libc link.
    let target = attach_target(&reg.registry, prog, pid);
    assert!(wait_for(Duration::from_secs(10), || percpu_sum(&map, 0) > 0).is_some(), "target_func probe never fired");
    reg.registry.remove_link(target).unwrap();
    churn(&reg.registry, prog, pid);
    // Two watcher ticks with every probe live.
    std::thread::sleep(Duration::from_millis(500));
    assert!(app.0.try_wait().unwrap().is_none(), "the app died: {:?}", app.0.try_wait());
    // The app's loop calls no libc function: every count is the agent's.
    assert_eq!(counted(&map, &names), BTreeMap::new(), "the agent's own calls were counted as the app's");
    assert!(percpu_sum(&map, 0) > 0);
}

#[test]
fn probes_on_every_libc_function_the_agent_calls_present_at_start_are_harmless() {
    let LibcProbes { libc, names, reg, map, prog } = LibcProbes::new("own-calls-start");
    // Every process: the constructor attaches them before `main`.
    attach_libc(&reg.registry, prog, &libc, &names, -1);
    let stderr = run_app(&reg, &["count", "1000"]);
    assert!(!stderr.contains("cannot attach"), "{stderr}");
    // `target count` calls strcmp/atol/printf; none of these is among them.
    let counts = counted(&map, &names);
    for never_by_the_app in ["getpid", "gettid", "opendir", "readdir64", "closedir", "read", "pthread_create", "syscall"] {
        assert_eq!(counts.get(never_by_the_app), None, "{never_by_the_app} counted: {counts:?}");
    }
}

#[test]
fn application_handlers_of_userbpfs_signals_installed_after_attach_get_only_the_applications_signals() {
    let reg = TestRegistry::new("own-signals");
    let map = count_map(&reg.registry);
    let prog = count_by_cookie_program(&reg.registry, &map);
    let mut app = RunningApp::start(&reg, &["sigown"]);
    let pid = app.pid();
    // Probes on target_ptr (a trampoline) and target_tiny (a breakpoint
    // site): once both fired, userbpf's handlers are installed, before the
    // app installs its own.
    app_link(&reg.registry, prog, "target_ptr", 1, pid);
    app_link(&reg.registry, prog, "target_tiny", 2, pid);
    assert!(
        wait_for(Duration::from_secs(10), || percpu_sum(&map, 1) > 0 && percpu_sum(&map, 2) > 0).is_some(),
        "the target_ptr/target_tiny probes never fired"
    );
    let mut stdin = app.0.stdin.take().unwrap();
    writeln!(stdin).unwrap();
    let mut stdout = std::io::BufReader::new(app.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "handlers", "the app's own handlers did not each run once");
    // The breakpoint probe still fires (SIGTRAP still reaches userbpf) ...
    let tiny_before = percpu_sum(&map, 2);
    assert!(
        wait_for(Duration::from_secs(10), || percpu_sum(&map, 2) > tiny_before + 10).is_some(),
        "the breakpoint probe stopped firing once the app installed its SIGTRAP handler"
    );
    // ... and live patching works (the rendezvous signal reaches userbpf).
    attach_target(&reg.registry, prog, pid);
    assert!(
        wait_for(Duration::from_secs(10), || percpu_sum(&map, 0) > 0).is_some(),
        "a probe attached after the app installed its handlers never fired"
    );
    writeln!(stdin).unwrap();
    drop(stdin);
    let status = app.0.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success(), "app exited with {status:?} (18/19: its handlers saw userbpf's signals)");
    assert!(rest.starts_with("done"), "{rest}");
}
