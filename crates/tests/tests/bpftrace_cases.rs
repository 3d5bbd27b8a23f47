//! Stock bpftrace scripts run with `-c` against the sample app, loader and
//! target as an ordinary user, compared with the output kernel bpftrace
//! printed for the same script (`expected/`, derived once with
//! `kernel_oracle` below; these tests never need kernel eBPF).

use std::time::Duration;

use tests::cases::{case, Case, CASES};
use tests::{expected_dir, mismatch, normalize, run_uid, World};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn check(c: &Case) {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let expected_path = expected_dir().join(format!("{}.out", c.name));
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (derive it with the kernel_oracle test)",
            expected_path.display()
        )
    });
    let out = world.bpftrace_c(c.script, c.command, RUN_TIMEOUT);
    let uid = run_uid();
    let actual = normalize(&out.stdout, Some(&world.dir), uid);
    let expected = normalize(&expected, None, uid);
    assert_eq!(
        actual,
        expected,
        "case {}{}\n{}",
        c.name,
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

macro_rules! case_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            check(case(stringify!($name)));
        }
    )*};
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
);

#[test]
fn every_case_has_a_test_and_an_expected_file() {
    let src = include_str!("bpftrace_cases.rs");
    for c in CASES {
        assert!(
            src.contains(&format!("    {},\n", c.name)),
            "case {} has no test",
            c.name
        );
        assert!(
            expected_dir().join(format!("{}.out", c.name)).is_file(),
            "case {} has no expected output",
            c.name
        );
        if c.kernel_artefact.is_some() {
            assert!(
                expected_dir()
                    .join(format!("{}.kernel.out", c.name))
                    .is_file(),
                "case {} lacks its kernel output",
                c.name
            );
        }
    }
}

/// Derive the expected outputs from kernel bpftrace (root, kernel eBPF).
/// Opt-in: `USERBPF_KERNEL_ORACLE=1 cargo test -p tests --test bpftrace_cases -- --ignored kernel_oracle`.
/// Cases with a `kernel_artefact` write `<name>.kernel.out` only; their
/// `<name>.out` is maintained by hand from it.
#[test]
#[ignore = "needs root and kernel eBPF; regenerates expected/"]
fn kernel_oracle() {
    if std::env::var_os("USERBPF_KERNEL_ORACLE").is_none() {
        eprintln!("kernel_oracle: set USERBPF_KERNEL_ORACLE=1 to regenerate expected/ with kernel bpftrace");
        return;
    }
    assert!(tests::is_root(), "the kernel oracle needs root");
    let only = std::env::var("USERBPF_ORACLE_CASE").ok();
    for c in CASES
        .iter()
        .filter(|c| only.as_deref().is_none_or(|o| o == c.name))
    {
        let world = World::new().expect("setup");
        let mut cmd = std::process::Command::new(tests::BPFTRACE);
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
        let text = normalize(&String::from_utf8_lossy(&out.stdout), Some(&world.dir), 0);
        let file = if c.kernel_artefact.is_some() {
            format!("{}.kernel.out", c.name)
        } else {
            format!("{}.out", c.name)
        };
        std::fs::write(expected_dir().join(&file), text).expect("write expected");
        eprintln!("kernel_oracle: wrote {file}");
    }
}
