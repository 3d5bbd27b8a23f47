//! End-to-end test harness: real `/usr/bin/bpftrace` with
//! `libsyscall_server.so`, real target programs with `libagent.so`, both
//! running as an ordinary user.
//!
//! What the harness owns:
//! - a world-readable scratch directory per test ([`World`]) holding copies
//!   of the two cdylibs and the sample apps it compiles with gcc from
//!   `apps/` (a checkout under /root is not readable by uid 65534);
//! - a private registry directory (`USERBPF_DIR`) owned by the user the
//!   processes run as;
//! - running processes as uid/gid 65534 with `setpriv` when the tests run as
//!   root (otherwise as the current user, said once on stderr), each in its
//!   own process group with a deadline, killed when it passes;
//! - output normalisation and comparison with the kernel-derived expected
//!   files in `expected/` ([`normalize`]).
//!
//! - which bpftrace runs ([`Bpftrace`]): Debian 12's own (0.17), or the
//!   bpftrace of Debian 13 (0.23) or sid (0.27) inside a chroot made by
//!   `scripts/chroots.sh`. For a chroot the world lives under the chroot's
//!   `/tmp`, so bpftrace inside and the traced apps outside name the very
//!   same files (the same inodes) by two paths.
//!
//! The test cases themselves live in `tests/`, the shared case table in
//! [`cases`].

pub mod cases;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The user the loader and the targets run as when the tests run as root.
pub const NOBODY: u32 = 65534;

/// A bpftrace release the tests run: the host's, or one in a Debian chroot.
#[derive(Clone, Debug)]
pub struct Bpftrace {
    /// `0.17`, `0.23`, `0.27`: names the expected outputs' directory.
    pub version: &'static str,
    /// The chroot bpftrace runs in (`None`: the host's `/usr/bin/bpftrace`).
    pub root: Option<PathBuf>,
}

/// The Debian suites whose bpftrace the tests run, made by
/// `scripts/chroots.sh` (one place, shared with the script through
/// `USERBPF_CHROOTS`).
pub const CHROOT_SUITES: &[(&str, &str)] = &[("trixie", "0.23"), ("sid", "0.27")];

impl Bpftrace {
    /// Debian 12's bpftrace (0.17).
    pub fn host() -> Bpftrace {
        Bpftrace {
            version: "0.17",
            root: None,
        }
    }

    /// The bpftrace of a Debian suite's chroot ([`CHROOT_SUITES`]), found
    /// under `$USERBPF_CHROOTS` (default: `.cache/chroots` of the
    /// workspace) with `/proc`, `/dev` and `/sys` mounted, as
    /// `scripts/chroots.sh` leaves it.
    pub fn debian(suite: &str) -> Result<Bpftrace, SetupError> {
        let version = CHROOT_SUITES
            .iter()
            .find(|(s, _)| *s == suite)
            .map(|(_, v)| *v)
            .ok_or_else(|| SetupError(format!("no chroot suite {suite}")))?;
        let dir = std::env::var_os("USERBPF_CHROOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/chroots"));
        // Canonical: the apps' /proc/PID/maps name files by canonical path.
        let root = dir.join(suite);
        let root = root.canonicalize().unwrap_or(root);
        let fix = "run scripts/chroots.sh as root (CI does)";
        if !root.join("usr/bin/bpftrace").exists() {
            return Err(SetupError(format!(
                "no bpftrace {version} chroot at {}: {fix}",
                root.display()
            )));
        }
        if !root.join("proc/self").exists() || !root.join("sys/kernel").exists() {
            return Err(SetupError(format!(
                "{} lacks /proc or /sys mounts: {fix}",
                root.display()
            )));
        }
        if !is_root() {
            return Err(SetupError(format!(
                "bpftrace {version} runs in a chroot, which needs root"
            )));
        }
        Ok(Bpftrace {
            version,
            root: Some(root),
        })
    }

    /// The release `version` (`0.17`, or one of [`CHROOT_SUITES`]).
    pub fn release(version: &str) -> Result<Bpftrace, SetupError> {
        if version == "0.17" {
            return Ok(Bpftrace::host());
        }
        let (suite, _) = CHROOT_SUITES
            .iter()
            .find(|(_, v)| *v == version)
            .ok_or_else(|| SetupError(format!("no bpftrace {version} suite")))?;
        Bpftrace::debian(suite)
    }

    /// Every release the end-to-end tests run: the host's, then the chroots'.
    pub fn all() -> Vec<Result<Bpftrace, SetupError>> {
        std::iter::once(Ok(Bpftrace::host()))
            .chain(CHROOT_SUITES.iter().map(|(suite, _)| Bpftrace::debian(suite)))
            .collect()
    }

    /// Where this release's expected outputs live: `expected/` for 0.17,
    /// `expected/bpftrace-<version>/` for the others.
    pub fn expected_dir(&self) -> PathBuf {
        match self.root {
            None => expected_dir(),
            Some(_) => expected_dir().join(format!("bpftrace-{}", self.version)),
        }
    }

    /// `bpftrace ARGS` as the kernel oracle runs it: as root, in the chroot.
    pub fn oracle_command(&self) -> Command {
        match &self.root {
            None => Command::new(BPFTRACE),
            Some(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(BPFTRACE);
                c
            }
        }
    }
}
/// The bpftrace every test drives.
pub const BPFTRACE: &str = "/usr/bin/bpftrace";

/// Why the harness cannot run (missing bpftrace, gcc, cdylibs).
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when the tests run as root (and so can drop to [`NOBODY`]).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions (not interposed in test binaries).
    unsafe { libc::geteuid() == 0 }
}

/// The uid the traced processes run as.
pub fn run_uid() -> u32 {
    if is_root() {
        NOBODY
    } else {
        // SAFETY: as above.
        unsafe { libc::getuid() }
    }
}

/// Directory of the cdylibs built with the test binaries: the test
/// executable lives in `<target>/<profile>/deps/`, cargo puts dependency
/// cdylibs there and uplifts workspace members' to `<target>/<profile>/`.
pub fn find_cdylib(name: &str) -> Result<PathBuf, SetupError> {
    let exe = std::env::current_exe().map_err(|e| SetupError(format!("current_exe: {e}")))?;
    let deps = exe
        .parent()
        .ok_or_else(|| SetupError("test binary has no parent dir".into()))?;
    let candidates = [
        deps.join(name),
        deps.parent().map(|p| p.join(name)).unwrap_or_default(),
    ];
    candidates
        .iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .cloned()
        .ok_or_else(|| {
            SetupError(format!(
                "{name} not found next to the test binary ({})",
                deps.display()
            ))
        })
}

/// A scratch world for one test: libs, apps, registry dir.
pub struct World {
    pub dir: PathBuf,
    pub agent: PathBuf,
    pub server: PathBuf,
    /// The sample executable (`apps/sample.c`).
    pub app: PathBuf,
    /// Its shared library (`apps/libsample.c`).
    pub lib: PathBuf,
    /// `USERBPF_DIR` for every process of this world.
    pub registry: PathBuf,
    /// The bpftrace this world runs.
    pub bpftrace: Bpftrace,
    /// `dir` as bpftrace sees it (inside its chroot; else `dir`).
    pub inner: PathBuf,
}

static WORLD_COUNTER: AtomicU32 = AtomicU32::new(0);

fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apps")
}

/// Directory of the expected outputs.
pub fn expected_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("expected")
}

/// Run `cmd` to success; its stdout.
fn run_ok(cmd: &mut Command, what: &str) -> Result<Vec<u8>, SetupError> {
    let out = cmd
        .output()
        .map_err(|e| SetupError(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(SetupError(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

fn chown_to_runner(path: &Path) -> Result<(), SetupError> {
    if !is_root() {
        return Ok(());
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: chown of a path we just created.
    if unsafe { libc::chown(c.as_ptr(), NOBODY, NOBODY) } != 0 {
        return Err(SetupError(format!(
            "chown {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

impl World {
    /// Build a world for the host's bpftrace: copy the cdylibs, compile
    /// the sample app and library.
    pub fn new() -> Result<World, SetupError> {
        World::with(Bpftrace::host())
    }

    /// Build a world for `bpftrace`: for a chroot, under its `/tmp`.
    pub fn with(bpftrace: Bpftrace) -> Result<World, SetupError> {
        if bpftrace.root.is_none() && !Path::new(BPFTRACE).exists() {
            return Err(SetupError(format!(
                "{BPFTRACE} is not installed (run scripts/setup.sh)"
            )));
        }
        static SAID: std::sync::Once = std::sync::Once::new();
        if !is_root() {
            SAID.call_once(|| eprintln!("e2e: not root, so loader and targets run as the current user (not uid {NOBODY})"));
        }
        let n = WORLD_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("userbpf-e2e-{}-{n}", std::process::id());
        let (dir, inner) = match &bpftrace.root {
            None => {
                let d = std::env::temp_dir().join(&name);
                (d.clone(), d)
            }
            Some(root) => (root.join("tmp").join(&name), Path::new("/tmp").join(&name)),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| SetupError(format!("mkdir {}: {e}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SetupError(format!("chmod {}: {e}", dir.display())))?;
        let agent = dir.join("libagent.so");
        let server = dir.join("libsyscall_server.so");
        for (name, dst) in [("libagent.so", &agent), ("libsyscall_server.so", &server)] {
            std::fs::copy(find_cdylib(name)?, dst)
                .map_err(|e| SetupError(format!("copy {name}: {e}")))?;
        }
        let lib = dir.join("libsample.so");
        let app = dir.join("sample");
        run_ok(
            Command::new("gcc")
                .args(["-O1", "-g", "-fPIC", "-shared", "-o"])
                .arg(&lib)
                .arg(apps_dir().join("libsample.c")),
            "gcc libsample.so",
        )?;
        run_ok(
            Command::new("gcc")
                .args(["-O1", "-g", "-o"])
                .arg(&app)
                .arg(apps_dir().join("sample.c"))
                .arg(format!("-L{}", dir.display()))
                .args(["-lsample", "-Wl,-rpath,$ORIGIN"]),
            "gcc sample",
        )?;
        for f in [&agent, &server, &lib, &app] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| SetupError(format!("chmod {}: {e}", f.display())))?;
        }
        let usdt = dir.join("usdt");
        run_ok(
            Command::new("gcc")
                .args(["-O1", "-g", "-o"])
                .arg(&usdt)
                .arg(apps_dir().join("usdt.c")),
            "gcc usdt (needs <sys/sdt.h>: Debian package systemtap-sdt-dev)",
        )?;
        std::fs::set_permissions(&usdt, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SetupError(format!("chmod {}: {e}", usdt.display())))?;
        let registry = dir.join("registry");
        std::fs::create_dir(&registry).map_err(|e| SetupError(format!("mkdir registry: {e}")))?;
        std::fs::set_permissions(&registry, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SetupError(format!("chmod registry: {e}")))?;
        chown_to_runner(&registry)?;
        Ok(World {
            dir,
            agent,
            server,
            app,
            lib,
            registry,
            bpftrace,
            inner,
        })
    }

    /// `path` (inside the world) as bpftrace sees it.
    pub fn inner_path(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.dir) {
            Ok(rest) => self.inner.join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// Substitute `{APP}`, `{LIB}`, `{USDT}` (`apps/usdt.c`), `{DIR}` in a
    /// script or command for bpftrace (the paths as bpftrace sees them).
    pub fn expand(&self, s: &str) -> String {
        s.replace("{APP}", &self.inner_path(&self.app).to_string_lossy())
            .replace("{USDT}", &self.inner.join("usdt").to_string_lossy())
            .replace("{LIB}", &self.inner_path(&self.lib).to_string_lossy())
            .replace("{DIR}", &self.inner.to_string_lossy())
    }

    /// `bpftrace` with the syscall server, as the test user, in its chroot
    /// if it has one; the world's paths as bpftrace sees them.
    fn bpftrace_command(&self) -> Command {
        let Some(root) = &self.bpftrace.root else {
            return self.command(BPFTRACE, &self.server);
        };
        let mut cmd = Command::new("chroot");
        cmd.arg(format!("--userspec={NOBODY}:{NOBODY}"))
            .arg(format!("--groups={NOBODY}"))
            .arg(root)
            .arg("env");
        let (registry, server) = (self.inner_path(&self.registry), self.inner_path(&self.server));
        self.finish_command(cmd, BPFTRACE, &registry, &server, &self.inner)
    }

    /// A command that runs `program` as the test user with the world's
    /// registry and `preload`, in its own process group.
    ///
    /// The variables are set by `env` right before `program`, not on the
    /// `setpriv` wrapper: the syscall server rewrites `LD_PRELOAD` for the
    /// children of whatever process loads it, so it must be loaded by the
    /// loader itself.
    fn command(&self, program: &str, preload: &Path) -> Command {
        let cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".to_string(),
                "--".to_string(),
            ]);
            c.arg("env");
            c
        } else {
            Command::new("env")
        };
        self.finish_command(cmd, program, &self.registry, preload, &self.dir)
    }

    /// `cmd` (ending in `env`) then `USERBPF_DIR=registry`,
    /// `LD_PRELOAD=preload`, `HOME=home` (paths as `program` sees them) and
    /// `program`; stdin closed, stdout/stderr piped, its own process group.
    fn finish_command(&self, mut cmd: Command, program: &str, registry: &Path, preload: &Path, home: &Path) -> Command {
        cmd.arg(format!("USERBPF_DIR={}", registry.display()))
            .arg(format!("LD_PRELOAD={}", preload.display()))
            .arg(format!("HOME={}", home.display()))
            .arg(program)
            .current_dir(&self.dir)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd
    }

    /// Start bpftrace (with the syscall server) on `script` plus extra args.
    pub fn spawn_bpftrace(&self, script: &str, extra: &[String]) -> Result<Proc, SetupError> {
        let mut cmd = self.bpftrace_command();
        cmd.arg("-e").arg(self.expand(script)).args(extra);
        Proc::spawn(cmd, "bpftrace")
    }

    /// Start bpftrace like [`World::spawn_bpftrace`], leaving its stdout
    /// for the caller to read ([`Proc::take_stdout`]) with exact timing.
    pub fn spawn_bpftrace_raw(&self, script: &str, extra: &[String]) -> Result<Proc, SetupError> {
        let mut cmd = self.bpftrace_command();
        cmd.arg("-e").arg(self.expand(script)).args(extra);
        Proc::spawn_raw(cmd, "bpftrace")
    }

    /// Start bpftrace (with the syscall server) with only these arguments
    /// (`--info`, `-l PATTERN`).
    pub fn spawn_bpftrace_args(&self, args: &[&str]) -> Result<Proc, SetupError> {
        let mut cmd = self.bpftrace_command();
        cmd.args(args);
        Proc::spawn(cmd, "bpftrace")
    }

    /// Start bpftrace (with the syscall server) on a script file.
    pub fn spawn_bpftrace_file(&self, script: &str, extra: &[String]) -> Result<Proc, SetupError> {
        let mut cmd = self.bpftrace_command();
        cmd.arg(script).args(extra);
        Proc::spawn(cmd, "bpftrace")
    }

    /// Start a loader (a libbpf or bcc tool) with the syscall server, as the
    /// test user.
    pub fn spawn_loader(&self, program: &str, args: &[&str]) -> Result<Proc, SetupError> {
        let mut cmd = self.command(program, &self.server);
        cmd.args(args);
        Proc::spawn(cmd, "loader")
    }

    /// Wait until a loader has published `n` attachments (uprobe links) in
    /// the world's registry: its probes are then in place for every agent
    /// that starts afterwards. Panics with the loader's stderr on timeout.
    /// (Loaders whose stdout is a pipe print nothing until they exit.)
    pub fn wait_for_links(&self, loader: &mut Proc, n: usize, timeout: Duration) {
        let links = self.registry.join("links");
        let deadline = Instant::now() + timeout;
        loop {
            let count = std::fs::read_dir(&links).map(|d| d.count()).unwrap_or(0);
            if count >= n {
                return;
            }
            let exited = loader.has_exited();
            assert!(
                Instant::now() < deadline && !exited,
                "the loader did not attach {n} probes ({count} seen; {}); stderr:\n{}",
                if exited { "it exited".to_string() } else { format!("waited {timeout:?}") },
                loader.stderr_now()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start the sample app with the agent.
    pub fn spawn_app(&self, args: &[&str]) -> Result<Proc, SetupError> {
        self.spawn_with_agent(&self.app.to_string_lossy(), args, None)
    }

    /// Start the sample app without the agent (as a user who forgot it).
    pub fn spawn_app_untraced(&self, args: &[&str]) -> Result<Proc, SetupError> {
        let mut cmd = self.command(&self.app.to_string_lossy(), Path::new(""));
        cmd.args(args);
        Proc::spawn(cmd, "untraced program")
    }

    /// Start any program as the test user on the world's registry, with
    /// nothing preloaded (a CLI such as `userbpf export`).
    pub fn spawn_plain(&self, program: &Path, args: &[&str]) -> Result<Proc, SetupError> {
        let mut cmd = self.command(&program.to_string_lossy(), Path::new(""));
        cmd.args(args);
        Proc::spawn(cmd, "program")
    }

    /// Start `program` without the agent, as the test user.
    pub fn spawn_app_untraced_path(&self, program: &Path, args: &[&str]) -> Result<Proc, SetupError> {
        let mut cmd = self.command(&program.to_string_lossy(), Path::new(""));
        cmd.args(args);
        Proc::spawn(cmd, "untraced program")
    }

    /// Start the sample app with the agent on another registry directory
    /// (`registry`, made here for the run's user).
    pub fn spawn_app_on_registry(&self, registry: &Path, args: &[&str]) -> Result<Proc, SetupError> {
        std::fs::create_dir_all(registry).map_err(|e| SetupError(format!("mkdir {}: {e}", registry.display())))?;
        std::fs::set_permissions(registry, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SetupError(format!("chmod {}: {e}", registry.display())))?;
        chown_to_runner(registry)?;
        let cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into(), "--".into()]);
            c.arg("env");
            c
        } else {
            Command::new("env")
        };
        let mut cmd = self.finish_command(cmd, &self.app.to_string_lossy(), registry, &self.agent, &self.dir);
        cmd.args(args);
        Proc::spawn(cmd, "program on another registry")
    }

    /// Start any program with the agent, optionally feeding `stdin`.
    pub fn spawn_with_agent(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Proc, SetupError> {
        let mut cmd = self.command(program, &self.agent);
        cmd.args(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut p = Proc::spawn(cmd, "traced program")?;
        if let (Some(data), Some(mut pipe)) = (stdin, p.child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(data)
                .map_err(|e| SetupError(format!("write stdin: {e}")))?;
        }
        Ok(p)
    }

    /// Compile `apps/<name>.c` into the world (world-readable executable).
    pub fn compile_app(&self, name: &str) -> Result<PathBuf, SetupError> {
        self.compile_app_with(name, &[])
    }

    /// [`World::compile_app`] with extra compiler flags.
    pub fn compile_app_with(&self, name: &str, flags: &[&str]) -> Result<PathBuf, SetupError> {
        let out = self.dir.join(name);
        run_ok(
            Command::new("gcc")
                .args(["-O1", "-g"])
                .args(flags)
                .arg("-o")
                .arg(&out)
                .arg(apps_dir().join(format!("{name}.c"))),
            &format!("gcc {name}"),
        )?;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SetupError(format!("chmod {}: {e}", out.display())))?;
        Ok(out)
    }

    /// Build the libbpf-bootstrap-style tool `apps/<name>/` into the world:
    /// `<name>.bpf.c` with clang, its skeleton with `bpftool gen skeleton`,
    /// `<name>.c` with gcc against Debian's libbpf. Returns the executable.
    pub fn build_libbpf_tool(&self, name: &str) -> Result<PathBuf, SetupError> {
        let src = apps_dir().join(name);
        let obj = self.dir.join(format!("{name}.bpf.o"));
        let hint = "(scripts/setup.sh installs clang, bpftool, libbpf-dev)";
        run_ok(
            Command::new("clang")
                .args(["-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86"])
                .arg("-I/usr/include/x86_64-linux-gnu")
                .arg("-c")
                .arg(src.join(format!("{name}.bpf.c")))
                .arg("-o")
                .arg(&obj),
            &format!("clang -target bpf {name}.bpf.c {hint}"),
        )?;
        let skel = run_ok(
            Command::new("bpftool").args(["gen", "skeleton"]).arg(&obj),
            &format!("bpftool gen skeleton {hint}"),
        )?;
        std::fs::write(self.dir.join(format!("{name}.skel.h")), &skel)
            .map_err(|e| SetupError(format!("write {name}.skel.h: {e}")))?;
        let tool = self.dir.join(name);
        run_ok(
            Command::new("gcc")
                .args(["-O1", "-g"])
                .arg(format!("-I{}", self.dir.display()))
                .arg(format!("-I{}", src.display()))
                .arg("-o")
                .arg(&tool)
                .arg(src.join(format!("{name}.c")))
                .args(["-lbpf", "-lelf", "-lz"]),
            &format!("gcc {name}.c {hint}"),
        )?;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SetupError(format!("chmod {}: {e}", tool.display())))?;
        Ok(tool)
    }

    /// Run bpftrace with `-c "{APP} args…"` (none if `command` is empty) to completion.
    pub fn bpftrace_c(&self, script: &str, command: &str, timeout: Duration) -> Output {
        let extra = if command.is_empty() {
            vec![]
        } else {
            vec!["-c".to_string(), self.expand(command)]
        };
        match self.spawn_bpftrace(script, &extra) {
            Ok(p) => p.wait_timeout(timeout),
            Err(e) => Output {
                stdout: String::new(),
                stderr: e.0,
                status: None,
                timed_out: false,
            },
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::env::var_os("USERBPF_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running process (its own process group), killed with its group on drop.
/// Its stdout and stderr are collected while it runs, so a test can wait for
/// a line (e.g. bpftrace's "Attaching") before acting.
pub struct Proc {
    child: Child,
    what: &'static str,
    stdout: Stream,
    stderr: Stream,
}

/// What a finished (or killed) process printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// Exit code; `None` if killed by a signal or never started.
    pub status: Option<i32>,
    pub timed_out: bool,
}

/// A pipe drained by a thread into a shared buffer.
struct Stream {
    buf: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn new(r: Option<impl Read + Send + 'static>) -> Stream {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let reader = r.map(|mut r| {
            let buf = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
            })
        });
        Stream { buf, reader }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn finish(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text()
    }
}

impl Proc {
    fn spawn(mut cmd: Command, what: &'static str) -> Result<Proc, SetupError> {
        let mut child = cmd
            .spawn()
            .map_err(|e| SetupError(format!("spawn {what}: {e}")))?;
        let stdout = Stream::new(child.stdout.take());
        let stderr = Stream::new(child.stderr.take());
        Ok(Proc {
            child,
            what,
            stdout,
            stderr,
        })
    }

    /// Like [`Proc::spawn`] but stdout stays in the child handle.
    fn spawn_raw(mut cmd: Command, what: &'static str) -> Result<Proc, SetupError> {
        let mut child = cmd
            .spawn()
            .map_err(|e| SetupError(format!("spawn {what}: {e}")))?;
        let stdout = Stream::new(None::<std::process::ChildStdout>);
        let stderr = Stream::new(child.stderr.take());
        Ok(Proc {
            child,
            what,
            stdout,
            stderr,
        })
    }

    /// The stdout pipe of a process started with `spawn_bpftrace_raw`.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `sig` to the process itself (bpftrace handles SIGINT).
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Stdout so far.
    pub fn stdout_now(&self) -> String {
        self.stdout.text()
    }

    /// Whether the process has exited (it is reaped when it has).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Stderr so far.
    pub fn stderr_now(&self) -> String {
        self.stderr.text()
    }

    /// Wait until bpftrace says its probes are attached: "Attaching N
    /// probes..." on stdout (up to 0.2x), "Attached N probes" on stderr
    /// (0.27); false on timeout or exit.
    pub fn wait_for_attach(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stdout.text().contains("Attaching") || self.stderr.text().contains("Attached") {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Wait until stdout contains `needle`; false on timeout or exit.
    /// Wait until stderr contains `needle` (or the process exited).
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr.text().contains(needle) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.stderr.finish().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stdout.text().contains(needle) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.stdout.finish().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn kill_group(&self) {
        // SAFETY: the child leads its own process group (process_group(0)).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
    }

    /// Wait until exit or `timeout`; on timeout kill the whole group.
    pub fn wait_timeout(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st.code(),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    eprintln!(
                        "e2e: {} (pid {}) did not finish within {timeout:?}: killed",
                        self.what,
                        self.child.id()
                    );
                    self.kill_group();
                    break self.child.wait().ok().and_then(|s| s.code());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break None,
            }
        };
        // Leftovers of the group (e.g. a -c child) must not outlive the test.
        self.kill_group();
        let stdout = self.stdout.finish();
        let stderr = self.stderr.finish();
        Output {
            stdout,
            stderr,
            status,
            timed_out,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

/// The first `len` bytes of function `symbol` of the ELF `file`, as on disk
/// and as currently in the memory of process `pid` (read through
/// `/proc/PID/mem`, which needs ptrace access: root, or our own child).
/// Equal means the function is not patched (no probe attached there).
pub fn function_bytes(
    pid: u32,
    file: &Path,
    symbol: &str,
    len: usize,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    use std::os::unix::fs::FileExt;
    let off = rewriter::elf::resolve_symbol(file, symbol).map_err(|e| e.to_string())?;
    let mut on_disk = vec![0u8; len];
    std::fs::File::open(file)
        .and_then(|f| f.read_exact_at(&mut on_disk, off))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("maps of {pid}: {e}"))?;
    let file_str = file.to_string_lossy();
    let addr = maps
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let _perms = f.next()?;
            let map_off = u64::from_str_radix(f.next()?, 16).ok()?;
            let (_dev, _ino, path) = (f.next()?, f.next()?, f.next()?);
            let (start, end) = range.split_once('-')?;
            let (start, end) = (
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            );
            (path == file_str && map_off <= off && off < map_off + (end - start))
                .then(|| start + off - map_off)
        })
        .ok_or_else(|| format!("{} offset {off:#x} is not mapped in {pid}", file.display()))?;
    let mut in_memory = vec![0u8; len];
    std::fs::File::open(format!("/proc/{pid}/mem"))
        .and_then(|f| f.read_exact_at(&mut in_memory, addr))
        .map_err(|e| format!("mem of {pid} at {addr:#x}: {e}"))?;
    Ok((on_disk, in_memory))
}

/// Make outputs comparable across runs and machines:
/// - the world directory becomes `{DIR}`, `uid=<run uid>` becomes `uid={UID}`;
/// - bpftrace prints map entries sorted by value, and entries with equal
///   values in the map's iteration order, which is a property of the hash
///   table (kernel or userbpf), not of the script: each run of consecutive
///   `@name[...]: value` lines with the same value is sorted.
pub fn normalize(text: &str, dir: Option<&Path>, uid: u32) -> String {
    let mut s = text.to_string();
    if let Some(d) = dir {
        s = s.replace(&*d.to_string_lossy(), "{DIR}");
    }
    s = s.replace(&format!("uid={uid}\n"), "uid={UID}\n");
    let lines: Vec<&str> = s.split_inclusive('\n').collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < lines.len() {
        let key = tie_key(lines[i]);
        let mut j = i + 1;
        if key.is_some() {
            while j < lines.len() && tie_key(lines[j]) == key {
                j += 1;
            }
        }
        let mut block: Vec<&str> = lines[i..j].to_vec();
        block.sort_unstable();
        out.extend(block);
        i = j;
    }
    out
}

/// Make the per-event lines of bpftrace's shipped tools comparable: a line
/// starting with a `time("%H:%M:%S")` stamp has its time and pid columns
/// (and the `volatile` column indexes given, e.g. a latency) replaced by
/// placeholders, and its whitespace collapsed.
pub fn normalize_tool_output(text: &str, volatile: &[usize]) -> String {
    let is_time = |t: &str| {
        let b = t.as_bytes();
        b.len() == 8
            && b[2] == b':'
            && b[5] == b':'
            && t.chars().filter(|c| c.is_ascii_digit()).count() == 6
    };
    text.split_inclusive('\n')
        .map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            if tokens.first().is_some_and(|t| is_time(t)) && tokens.len() >= 2 {
                let mut out: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
                out[0] = "TIME".into();
                out[1] = "PID".into();
                for &i in volatile {
                    if i < out.len() {
                        out[i] = "X".into();
                    }
                }
                format!("{}\n", out.join(" "))
            } else {
                line.to_string()
            }
        })
        .collect()
}

/// `(map name, value)` of a `@name[key]: value` line.
fn tie_key(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('@')?;
    let bracket = rest.find('[')?;
    let name = &rest[..bracket];
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let colon = line.rfind("]: ")?;
    Some((name, line[colon + 3..].trim_end()))
}

/// A readable diff-ish report for assertion messages.
pub fn mismatch(expected: &str, actual: &str, out: &Output) -> String {
    format!(
        "--- expected stdout\n{expected}--- actual stdout\n{actual}--- stderr\n{}--- status {:?}{}",
        out.stderr,
        out.status,
        if out.timed_out { " (timed out)" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_sorts_ties_and_rewrites_paths() {
        let dir = Path::new("/tmp/w1");
        let text = "@[3]: 1\n@[0]: 1\n@[9]: 2\nuprobe:/tmp/w1/sample:f uid=65534\n";
        let want = "@[0]: 1\n@[3]: 1\n@[9]: 2\nuprobe:{DIR}/sample:f uid=65534\n";
        assert_eq!(normalize(text, Some(dir), 7), want);
        assert_eq!(normalize("uid=7\n", None, 7), "uid={UID}\n");
    }

    #[test]
    fn tool_lines_lose_time_pid_and_volatile_columns() {
        let text = "TIME      PID    COMM\n10:15:51  1636   resolver              2 localhost\n\n";
        assert_eq!(
            normalize_tool_output(text, &[3]),
            "TIME      PID    COMM\nTIME PID resolver X localhost\n\n"
        );
    }

    #[test]
    fn tie_key_only_matches_keyed_map_lines() {
        assert_eq!(tie_key("@x[1, a]: 5\n"), Some(("x", "5")));
        assert_eq!(tie_key("@c: 5\n"), None);
        assert_eq!(tie_key("hello\n"), None);
    }
}
