//! Stock bpftrace scripts run with `-c` against the sample app, loader and
//! target as an ordinary user, compared with the output kernel bpftrace
//! printed for the same script (`expected/`, derived once with
//! `kernel_oracle` below; these tests never need kernel eBPF).
//!
//! Every case runs under three bpftrace releases: Debian 12's 0.17, and
//! Debian 13's 0.23 and sid's 0.27 in the chroots `scripts/chroots.sh`
//! makes, each against its own kernel output
//! (`expected/bpftrace-<version>/`).

use std::time::Duration;

use tests::cases::{case, cases_for, Case, CASES, CASES_0_24, MODERN_CASES};
use tests::{mismatch, normalize, run_uid, Bpftrace, World, CHROOT_SUITES};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The release of one `bpftrace_<version>` test module.
fn release(version: &str) -> Bpftrace {
    Bpftrace::release(version).unwrap_or_else(|e| panic!("e2e setup: {e}"))
}

fn check(bpftrace: Bpftrace, c: &Case) {
    let world = World::with(bpftrace).unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let expected_path = world
        .bpftrace
        .expected_dir()
        .join(format!("{}.out", c.name));
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (derive it with the kernel_oracle test)",
            expected_path.display()
        )
    });
    let out = world.bpftrace_c(c.script, c.command, RUN_TIMEOUT);
    let uid = run_uid();
    let actual = normalize(&out.stdout, Some(&world.inner), uid);
    let expected = normalize(&expected, None, uid);
    assert_eq!(
        actual,
        expected,
        "case {} under bpftrace {}{}\n{}",
        c.name,
        world.bpftrace.version,
        c.kernel_artefact
            .map(|w| format!(" (differs from the kernel on purpose: {w})"))
            .unwrap_or_default(),
        mismatch(&expected, &actual, &out)
    );
    assert_eq!(
        out.status,
        Some(0),
        "bpftrace exit status\n{}",
        mismatch(&expected, &actual, &out)
    );
}

/// One test module for `$version`, one test per case name.
macro_rules! release_tests {
    ($module:ident, $version:literal, $($name:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::check(super::release($version), super::case(stringify!($name)));
                }
            )*
        }
    };
}

/// Every case under every release.
macro_rules! case_tests {
    ($($name:ident),* $(,)?) => {
        release_tests!(bpftrace_0_17, "0.17", $($name),*);
        release_tests!(bpftrace_0_23, "0.23", $($name),*);
        release_tests!(bpftrace_0_27, "0.27", $($name),*);
    };
}

case_tests!(
    // Programs the loader runs itself (BEGIN, interval:, END): no target app.
    loader_only,
    count,
    printf_args,
    uretprobe_retval,
    shared_library,
    wildcard_probe,
    library_wildcard,
    begin_end_exit,
    builtins,
    str_args,
    aggregations,
    map_keys_delete_clear_zero,
    control_flow,
    print_time,
    interval,
    usdt_args,
);

/// Cases only bpftrace 0.20+ speaks ([`MODERN_CASES`]), under 0.23 and 0.27.
macro_rules! modern_case_tests {
    ($($name:ident),* $(,)?) => {
        release_tests!(modern_bpftrace_0_23, "0.23", $($name),*);
        release_tests!(modern_bpftrace_0_27, "0.27", $($name),*);
    };
}

modern_case_tests!(
    for_loop_over_map,
);

// Cases of 0.24+ builtins ([`CASES_0_24`]), under 0.27.
release_tests!(bpftrace_0_27_since_0_24, "0.27", string_kfuncs);

/// `signal("KILL")` (`bpf_send_signal`, `--unsafe`): the app dies at the
/// call that raised it, before `sample: done`, and bpftrace prints what it
/// counted up to there, as on the kernel (`expected/…/signal_kill.out`).
fn signal_kills_the_app_where_the_kernel_does(version: &str) {
    let world = World::with(release(version)).unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let script = r#"uprobe:{APP}:add2 /arg0 == 3/ { signal("KILL"); @[arg0] = count(); }"#;
    let out = world
        .spawn_bpftrace(script, &["--unsafe".into(), "-c".into(), world.expand("{APP} 10")])
        .expect("spawn bpftrace")
        .wait_timeout(RUN_TIMEOUT);
    let path = world.bpftrace.expected_dir().join("signal_kill.out");
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let uid = run_uid();
    let (expected, actual) = (normalize(&expected, None, uid), normalize(&out.stdout, Some(&world.inner), uid));
    assert_eq!(actual, expected, "bpftrace {version}\n{}", mismatch(&expected, &actual, &out));
    assert!(!out.stderr.contains("sample: done"), "the app ran to its end:\n{}", out.stderr);
}

mod signal_kill {
    #[test]
    fn bpftrace_0_17() {
        super::signal_kills_the_app_where_the_kernel_does("0.17");
    }

    #[test]
    fn bpftrace_0_23() {
        super::signal_kills_the_app_where_the_kernel_does("0.23");
    }

    #[test]
    fn bpftrace_0_27() {
        super::signal_kills_the_app_where_the_kernel_does("0.27");
    }
}

#[test]
fn every_case_has_a_test_and_an_expected_file_for_every_release() {
    let src = include_str!("bpftrace_cases.rs");
    for c in CASES.iter().chain(MODERN_CASES) {
        assert!(
            src.contains(&format!("    {},\n", c.name)),
            "case {} has no test",
            c.name
        );
    }
    for c in CASES_0_24 {
        assert!(
            src.contains(&format!(" {});\n", c.name)) || src.contains(&format!(" {},", c.name)),
            "case {} has no test",
            c.name
        );
    }
    // Each release runs the cases of its language (`cases_for`).
    let host = Bpftrace::host();
    let dirs = std::iter::once((host.expected_dir(), host.version)).chain(CHROOT_SUITES.iter().map(
        |(_, version)| (Bpftrace { version, root: Some("/".into()) }.expected_dir(), *version),
    ));
    for (dir, version) in dirs {
        for c in cases_for(version) {
            assert!(
                dir.join(format!("{}.out", c.name)).is_file(),
                "case {} has no expected output in {}",
                c.name,
                dir.display()
            );
            if c.kernel_artefact.is_some() {
                assert!(
                    dir.join(format!("{}.kernel.out", c.name)).is_file(),
                    "case {} lacks its kernel output in {}",
                    c.name,
                    dir.display()
                );
            }
        }
    }
}

/// Derive the expected outputs from kernel bpftrace (root, kernel eBPF),
/// for every release (`USERBPF_ORACLE_RELEASE=0.23` for one).
/// Opt-in: `USERBPF_KERNEL_ORACLE=1 cargo test -p tests --test bpftrace_cases -- --ignored kernel_oracle`.
/// Cases with a `kernel_artefact` write `<name>.kernel.out` only; their
/// `<name>.out` is maintained by hand from it.
#[test]
#[ignore = "needs root and kernel eBPF; regenerates expected/"]
fn kernel_oracle() {
    assert!(
        std::env::var_os("USERBPF_KERNEL_ORACLE").is_some(),
        "set USERBPF_KERNEL_ORACLE=1 to regenerate expected/ with kernel bpftrace (it overwrites the files)"
    );
    assert!(tests::is_root(), "the kernel oracle needs root");
    let only = std::env::var("USERBPF_ORACLE_CASE").ok();
    let only_release = std::env::var("USERBPF_ORACLE_RELEASE").ok();
    for bpftrace in Bpftrace::all() {
        let bpftrace = bpftrace.unwrap_or_else(|e| panic!("kernel_oracle: {e}"));
        if only_release.as_deref().is_some_and(|r| r != bpftrace.version) {
            continue;
        }
        std::fs::create_dir_all(bpftrace.expected_dir()).expect("mkdir expected");
        for c in cases_for(bpftrace.version).filter(|c| only.as_deref().is_none_or(|o| o == c.name)) {
            oracle_case(&bpftrace, c);
        }
    }
}

fn oracle_case(bpftrace: &Bpftrace, c: &Case) {
    {
        let world = World::with(bpftrace.clone()).expect("setup");
        let mut cmd = bpftrace.oracle_command();
        cmd.arg("-e").arg(world.expand(c.script));
        if !c.command.is_empty() {
            cmd.arg("-c").arg(world.expand(c.command));
        }
        let out = cmd
            .current_dir(&world.dir)
            .output()
            .expect("run kernel bpftrace");
        assert!(
            out.status.success(),
            "kernel bpftrace failed for {}: {}",
            c.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = normalize(&String::from_utf8_lossy(&out.stdout), Some(&world.inner), 0);
        let file = if c.kernel_artefact.is_some() {
            format!("{}.kernel.out", c.name)
        } else {
            format!("{}.out", c.name)
        };
        let path = bpftrace.expected_dir().join(&file);
        std::fs::write(&path, text).expect("write expected");
        eprintln!("kernel_oracle: wrote {}", path.display());
    }
}
