//! Shared fixtures of the agent's integration tests: a temporary registry,
//! the C target application (compiled once per test binary), the built
//! `libagent.so`, and registry objects created directly through shm-maps
//! the way the syscall server would create them.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shm_maps::{map_type, LinkKind, LinkRecord, Map, MapSpec, ProgRecord, Registry};

/// `BPF_PROG_TYPE_KPROBE` (uprobes are kprobe programs).
pub const PROG_TYPE_KPROBE: u32 = 2;

/// A registry in a fresh private directory, removed on drop.
pub struct TestRegistry {
    pub dir: PathBuf,
    pub registry: Registry,
}

impl TestRegistry {
    pub fn new(name: &str) -> TestRegistry {
        let dir = std::env::temp_dir().join(format!("userbpf-agent-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let registry = Registry::open(&dir).expect("open test registry");
        TestRegistry { dir, registry }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn target_dir() -> PathBuf {
    // The test binary lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// The `libagent.so` cargo built alongside this test: `deps/` holds the
/// one `cargo test` just built; the uplifted copy may be older (it is only
/// refreshed by `cargo build`), so the newer of the two wins.
pub fn agent_library() -> PathBuf {
    let dir = target_dir();
    [dir.join("deps").join("libagent.so"), dir.join("libagent.so")]
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("libagent.so not found under {} (build the agent crate first)", dir.display()))
}

/// Compile `source` (under tests/apps) with `flags` into the target dir,
/// named after a hash of the source and flags so reruns reuse it; built
/// under a temporary name and renamed, so concurrent test binaries never
/// see a half-written file.
fn compile(source: &str, stem: &str, flags: &[&str]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps").join(source);
    let text = std::fs::read(&source).expect("read C source");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (text, flags).hash(&mut hasher);
    let out = target_dir().join(format!("{stem}-{:016x}", hasher.finish()));
    if out.exists() {
        return out;
    }
    let tmp = target_dir().join(format!(".{stem}-{}.tmp", std::process::id()));
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&tmp)
        .arg(&source)
        .status()
        .expect("run cc (a C compiler is needed for the agent tests)");
    assert!(status.success(), "compiling {} failed", source.display());
    std::fs::rename(&tmp, &out).expect("publish compiled test program");
    out
}

/// The compiled target application.
pub fn target_app() -> &'static Path {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        if let Some(app) = std::env::var_os("USERBPF_AGENT_TEST_APP") {
            return PathBuf::from(app); // a helper process of a test reuses its app
        }
        compile("target.c", "agent-test-target", &["-O1", "-g", "-fno-omit-frame-pointer"])
    })
}

/// The target app as a command with the agent preloaded on `registry`.
pub fn app_command(registry: &TestRegistry, args: &[&str]) -> Command {
    let mut cmd = Command::new(target_app());
    cmd.args(args)
        .env("LD_PRELOAD", agent_library())
        .env("USERBPF_DIR", &registry.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Run the app to completion; asserts it exited normally and printed `done`.
pub fn run_app(registry: &TestRegistry, args: &[&str]) -> String {
    let out = app_command(registry, args).output().expect("run target app");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "app {args:?} failed: {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status);
    assert!(stdout.starts_with("done"), "app {args:?} output: {stdout}\nstderr: {stderr}");
    stderr
}

/// A spawned long-running app (killed on drop).
pub struct RunningApp(pub Child);

impl RunningApp {
    pub fn start(registry: &TestRegistry, args: &[&str]) -> RunningApp {
        use std::io::BufRead;
        // stderr inherited: the agent's messages show up in the test output.
        // stdin piped: modes that read it stop when the test closes it.
        let mut child =
            app_command(registry, args).stderr(Stdio::inherit()).stdin(Stdio::piped()).spawn().expect("spawn app");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        RunningApp(child)
    }
}

impl RunningApp {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Close the app's stdin and wait for it; asserts a clean exit.
    pub fn finish(mut self) {
        drop(self.0.stdin.take());
        let status = self.0.wait().unwrap();
        assert!(status.success(), "app exited with {status:?}");
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test plugin library (compiled once per test binary).
pub fn plugin_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| compile("plugin.c", "agent-test-plugin", &["-O1", "-g", "-fPIC", "-shared"]))
}

/// Create an uprobe attachment on `symbol` of the ELF file `file`, firing
/// only in process `pid` (-1: every process).
pub fn attach_file(registry: &Registry, prog_id: u32, file: &Path, symbol: &str, pid: i32) -> u32 {
    let meta = std::fs::metadata(file).unwrap();
    registry
        .create_link(&LinkRecord {
            kind: LinkKind::Uprobe,
            prog_id,
            enabled: true,
            pid,
            target_path: file.display().to_string(),
            file_offset: rewriter::elf::resolve_symbol(file, symbol).expect("resolve symbol"),
            dev: meta.dev(),
            inode: meta.ino(),
            ..Default::default()
        })
        .expect("create link")
}

/// File offset of `symbol` in the target app.
pub fn symbol_offset(symbol: &str) -> u64 {
    rewriter::elf::resolve_symbol(target_app(), symbol).expect("resolve symbol")
}

/// A PERCPU_HASH map like bpftrace's `@c` (key 8, value 8).
pub fn count_map(registry: &Registry) -> Map {
    registry
        .create_map(&MapSpec {
            map_type: map_type::PERCPU_HASH,
            key_size: 8,
            value_size: 8,
            max_entries: 4096,
            name: "c".into(),
            ..Default::default()
        })
        .expect("create map")
}

/// Store a program assembled from `text` (`map_fd(N)` = registry map id).
pub fn store_program(registry: &Registry, name: &str, text: &str, map_ids: &[u32]) -> u32 {
    let insns = vm::asm::assemble(text).expect("assemble");
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_u64().to_le_bytes()).collect();
    registry
        .create_prog(&ProgRecord {
            prog_type: PROG_TYPE_KPROBE,
            name: name.into(),
            license: "GPL".into(),
            insns: bytes,
            map_ids: map_ids.to_vec(),
            ..Default::default()
        })
        .expect("store program")
}

/// bpftrace's `@c = count()` with a constant key 0.
pub fn count_program(registry: &Registry, map: &Map) -> u32 {
    let m = map.id();
    let text = vm::fixtures::bpftrace_count(m);
    store_program(registry, "count", &text, &[m])
}

/// Create an uprobe attachment on `symbol` of the target app.
pub fn attach(registry: &Registry, prog_id: u32, symbol: &str, kind: LinkKind, enabled: bool) -> u32 {
    let app = target_app();
    let meta = std::fs::metadata(app).unwrap();
    registry
        .create_link(&LinkRecord {
            kind,
            prog_id,
            enabled,
            pid: -1,
            target_path: app.display().to_string(),
            file_offset: symbol_offset(symbol),
            dev: meta.dev(),
            inode: meta.ino(),
            ..Default::default()
        })
        .expect("create link")
}

/// Sum of a per-CPU u64 value under `key` (0 if absent).
pub fn percpu_sum(map: &Map, key: u64) -> u64 {
    let mut out = vec![0u8; map.syscall_value_size()];
    match map.lookup(&key.to_le_bytes(), &mut out) {
        Ok(()) => out.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).sum(),
        Err(_) => 0,
    }
}

/// Poll `condition` every millisecond for up to `limit`; returns the time
/// it took to become true, or `None`.
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}
