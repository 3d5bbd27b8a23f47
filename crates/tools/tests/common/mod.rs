//! Shared helpers of the `userbpf` command tests: a scratch directory,
//! compiling the C fixtures, running the built binary with a timeout, and
//! starting the fixture app as an ordinary child of the test (never via userbpf).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every wait in these tests ends after this long.
pub const WAIT: Duration = Duration::from_secs(20);

/// The built `userbpf` binary.
pub fn userbpf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_userbpf"))
}

/// A directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("userbpf-tools-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Compiles a C fixture with the system C compiler.
pub fn compile(source: &str, output: &Path, extra: &[&str]) {
    let status = Command::new("cc")
        .args(["-O1", "-g", "-o"])
        .arg(output)
        .arg(fixture(source))
        .args(extra)
        .status()
        .expect("run cc (a C compiler is needed for the fixtures)");
    assert!(status.success(), "compiling {source} failed");
}

/// Builds the fixture app.
pub fn build_target(scratch: &Scratch) -> PathBuf {
    let out = scratch.path("target");
    compile("target.c", &out, &["-pthread"]);
    out
}

/// Builds the marker library under `file_name` (e.g. `libagent.so`).
pub fn build_marker_lib(scratch: &Scratch, file_name: &str) -> PathBuf {
    build_marker_lib_stamped(scratch, file_name, Some(shm_maps::LAYOUT_VERSION))
}

/// The marker library with a userbpf build stamp of registry layout
/// `layout` (`None`: no stamp).
pub fn build_marker_lib_stamped(scratch: &Scratch, file_name: &str, layout: Option<u32>) -> PathBuf {
    let out = scratch.path(file_name);
    let define = layout.map(|l| format!("-DSTAMP_LAYOUT={l}"));
    let mut extra = vec!["-shared", "-fPIC"];
    extra.extend(define.as_deref());
    compile("marker_lib.c", &out, &extra);
    out
}

/// Runs a command to completion, killing it after [`WAIT`].
pub fn run_with_timeout(cmd: &mut Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "command timed out: {cmd:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `path` exists and holds a line, returning its content.
pub fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The fixture app, started directly by the test; killed on drop.
pub struct Target {
    pub child: Child,
    pub pid: i32,
}

impl Target {
    /// Starts the fixture in `mode`, with `USERBPF_TEST_MARKER` set to `marker`.
    pub fn start(binary: &Path, scratch: &Scratch, mode: &str, marker: &Path) -> Target {
        let pidfile = scratch.path(&format!("{mode}.pid"));
        let child = Command::new(binary)
            .arg(&pidfile)
            .arg(mode)
            .env("USERBPF_TEST_MARKER", marker)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start target");
        let pid: i32 = wait_for_file(&pidfile).trim().parse().expect("pid in pidfile");
        assert_eq!(pid, child.id() as i32);
        Target { child, pid }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Asks the target to stop (SIGTERM) and returns its exit code and stderr.
    pub fn finish(mut self) -> (Option<i32>, String) {
        // SAFETY: kill with a pid we own (our child, not yet reaped).
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        drop(self.child.stdin.take());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut stderr) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = stderr.read_to_string(&mut err);
                }
                return (status.code(), err);
            }
            assert!(Instant::now() < deadline, "target did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why this user cannot ptrace a process it did not start, if Yama says so
/// (`ptrace_scope` 1 or 2 for non-root, 3 for everyone). Tests then check
/// that `attach` explains it instead of attaching.
pub fn yama_blocks_attach() -> Option<u32> {
    let scope: u32 = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok()?.trim().parse().ok()?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    (scope >= 3 || (scope >= 1 && !root)).then_some(scope)
}

/// Text of a command's stdout and stderr.
pub fn texts(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

// ---- end-to-end prerequisites: real libraries, stock bpftrace, an ordinary user ----

pub const NOBODY: u32 = 65534;
pub const BPFTRACE: &str = "/usr/bin/bpftrace";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A userbpf library built in the same cargo profile as `userbpf`: next to it
/// (`cargo build` uplifts cdylibs there) or in `deps/` (where `cargo test`
/// leaves them); the newest if both exist.
pub fn built_library(name: &str) -> Option<PathBuf> {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_userbpf")).parent()?;
    [bin_dir.join(name), bin_dir.join("deps").join(name)]
        .into_iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// Why the end-to-end test cannot run here, if it cannot.
/// Panics naming what is missing: `scripts/setup.sh` installs bpftrace and
/// the build makes the libraries, so a missing one is a failure, not a skip.
pub fn require_prerequisites() {
    if let Some(why) = missing_prerequisite() {
        panic!("end-to-end prerequisite missing: {why}");
    }
}

fn missing_prerequisite() -> Option<String> {
    if !Path::new(BPFTRACE).exists() {
        return Some(format!("{BPFTRACE} is not installed"));
    }
    for lib in ["libagent.so", "libsyscall_server.so"] {
        if built_library(lib).is_none() {
            return Some(format!(
                "{lib} is not built next to userbpf ({}) nor in its deps/ (cargo build --workspace)",
                Path::new(env!("CARGO_BIN_EXE_userbpf")).parent()?.display()
            ));
        }
    }
    None
}

/// A command run as the test's ordinary user (`nobody` when the tests run as root).
pub fn as_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into(), "--".into()]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

pub fn chown_to_user(path: &Path) {
    if is_root() {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: chown of a path this test created.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), NOBODY, NOBODY) }, 0, "chown {}", path.display());
    }
}

