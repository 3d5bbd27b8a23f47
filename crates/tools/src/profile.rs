//! `userbpf profile PID|-- CMD`: a CPU profile of one process, sampled by
//! its own agent, as folded stacks or a flame graph.
//!
//! The command is a small loader of its own, talking to the registry
//! directly: a stack-trace map, a per-CPU count per stack, and a
//! `PERF_EVENT` program (`bpf_get_stackid(ctx, stacks, BPF_F_USER_STACK)`,
//! then bpftrace's count() steps on the id), checked by the same verifier
//! the syscall server runs, and one `PerfEvent` link with the process's pid.
//! The agent samples every thread of the process on its CPU time at `-F`
//! Hz (see `agent/src/sampler.rs`) and walks each stack by frame pointers
//! (as the kernel's `bpf_get_stackid` does: code built without them gives
//! short stacks). When the time is up (or the command exits) the CLI reads
//! the maps and names every frame from the process's mappings and ELF
//! symbols (`symbolize.rs`); mappings are re-read while it runs, so a
//! command that exits is still symbolised. Folded output is the one of
//! `stackcollapse-*` (`comm;root;…;leaf count`), the SVG is `inferno`'s.

use crate::error::{exit, CliError, CliResult};
use crate::locate::Library;
use crate::procfs::{self, Mapping};
use crate::symbolize::Symbolizer;
use shm_maps::{map_type, LinkKind, LinkRecord, MapSpec, ProgRecord, Registry};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Frames kept per stack (bpftrace's and the kernel's default, 127).
const MAX_FRAMES: u32 = 127;
/// Distinct stacks kept.
const MAX_STACKS: u32 = 16384;
const BPF_F_USER_STACK: i32 = 1 << 8;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const BPF_PROG_TYPE_PERF_EVENT: u32 = 7;

pub struct Options {
    pub pid: Option<i32>,
    pub command: Vec<OsString>,
    pub frequency: u64,
    pub duration: Option<f64>,
    pub svg: Option<PathBuf>,
}

/// The registry objects of one profile; removed on drop.
struct Session<'r> {
    registry: &'r Registry,
    stacks: u32,
    counts: u32,
    prog: u32,
    link: Option<u32>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.link {
            let _ = self.registry.remove_link(link);
        }
        let _ = self.registry.remove_prog(self.prog);
        let _ = self.registry.remove_map(self.counts);
        let _ = self.registry.remove_map(self.stacks);
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::new(format!("{what}: {e}"))
}

/// The sampling program, assembled and verified.
fn program(stacks: u32, counts: u32) -> CliResult<(Vec<u8>, String)> {
    let text = format!(
        "lddw %r2, map_fd({stacks})\nmov %r3, {BPF_F_USER_STACK}\ncall bpf_get_stackid\nstxdw [%r10-8], %r0\n{}",
        vm::fixtures::count_key_at_fp_minus_8(counts)
    );
    let insns = vm::asm::assemble(&text)
        .map_err(|e| CliError::new(format!("internal: the profile program: {e}")))?;
    let describe = |p: verifier::PseudoLoad| -> Option<verifier::MapDesc> {
        let (map_type, key_size, value_size, max_entries) = if p.imm as u32 == stacks {
            (map_type::STACK_TRACE, 4, MAX_FRAMES * 8, MAX_STACKS)
        } else if p.imm as u32 == counts {
            (map_type::PERCPU_HASH, 8, 8, MAX_STACKS)
        } else {
            return None;
        };
        Some(verifier::MapDesc {
            map_type,
            key_size,
            value_size,
            max_entries,
        })
    };
    let opts = verifier::VerifyOptions {
        log_level: 0,
        unprivileged: false,
        ..Default::default()
    };
    let verdict = verifier::verify(&insns, verifier::ProgType::PerfEvent, &describe, &opts)
        .map_err(|e| {
            CliError::new(format!(
                "internal: the profile program is refused by the verifier: {}",
                e.log
            ))
        })?;
    Ok((
        insns
            .iter()
            .flat_map(|i| i.to_u64().to_le_bytes())
            .collect(),
        verdict.log,
    ))
}

/// `userbpf profile`.
pub fn profile(opts: Options) -> CliResult {
    if opts.frequency == 0 || opts.frequency > 10_000 {
        return Err(CliError::with_code(
            exit::USAGE,
            format!("-F {}: the frequency must be 1–10000 Hz", opts.frequency),
        ));
    }
    let dir = shm_maps::default_dir();
    let registry = Registry::open(&dir).map_err(|e| {
        CliError::with_code(
            exit::ENVIRONMENT,
            format!("cannot open the registry {}: {e}", dir.display()),
        )
        .hint("`userbpf doctor` checks the registry directory; USERBPF_DIR selects another one")
    })?;
    let _ = registry.set_role("loader");
    let stacks = registry
        .create_map(&MapSpec {
            map_type: map_type::STACK_TRACE,
            key_size: 4,
            value_size: MAX_FRAMES * 8,
            max_entries: MAX_STACKS,
            name: "profile_stacks".into(),
            ..Default::default()
        })
        .map_err(|e| failed("creating the stack map", e))?;
    let counts = registry
        .create_map(&MapSpec {
            map_type: map_type::PERCPU_HASH,
            key_size: 8,
            value_size: 8,
            max_entries: MAX_STACKS,
            name: "profile_counts".into(),
            ..Default::default()
        })
        .map_err(|e| failed("creating the count map", e))?;
    let (insns, verifier_log) = program(stacks.id(), counts.id())?;
    let prog = registry
        .create_prog(&ProgRecord {
            prog_type: BPF_PROG_TYPE_PERF_EVENT,
            name: "userbpf_profile".into(),
            license: "GPL".into(),
            insns,
            map_ids: vec![stacks.id(), counts.id()],
            verifier_log,
            ..Default::default()
        })
        .map_err(|e| failed("storing the profile program", e))?;
    let mut session = Session {
        registry: &registry,
        stacks: stacks.id(),
        counts: counts.id(),
        prog,
        link: None,
    };

    crate::stop::on_interrupt();
    let mut child = None;
    let pid = match opts.pid {
        Some(pid) => {
            let maps = procfs::read_maps(pid).map_err(|e| {
                CliError::with_code(
                    exit::NOT_FOUND,
                    format!("cannot read the mappings of process {pid}: {e}"),
                )
            })?;
            if !maps
                .iter()
                .any(|m| m.file_name() == Some(Library::Agent.file_name()))
            {
                return Err(CliError::with_code(
                    exit::ENVIRONMENT,
                    format!(
                        "process {pid} does not have {} loaded, so nothing samples it",
                        Library::Agent.file_name()
                    ),
                )
                .hint(format!(
                    "load it with `userbpf attach {pid}`, or start the app with `userbpf run`"
                )));
            }
            pid
        }
        None => {
            let agent = crate::locate::find_compatible(Library::Agent)?;
            let (program, args) = opts
                .command
                .split_first()
                .ok_or_else(|| CliError::with_code(exit::USAGE, "no command"))?;
            let preload =
                crate::launch::prepend_preload(&agent, std::env::var_os("LD_PRELOAD").as_deref());
            let c = std::process::Command::new(program)
                .args(args)
                .env("LD_PRELOAD", preload)
                .env("USERBPF_DIR", &dir)
                .spawn()
                .map_err(|e| {
                    CliError::with_code(
                        127,
                        format!("cannot start {}: {e}", program.to_string_lossy()),
                    )
                })?;
            let pid = c.id() as i32;
            child = Some(c);
            pid
        }
    };
    let link = registry
        .create_link(&LinkRecord {
            kind: LinkKind::PerfEvent,
            prog_id: prog,
            enabled: true,
            pid,
            config: PERF_COUNT_SW_CPU_CLOCK,
            sample_period: 1_000_000_000 / opts.frequency,
            cpu: -1,
            ..Default::default()
        })
        .map_err(|e| failed("creating the profile link", e))?;
    session.link = Some(link);
    eprintln!(
        "userbpf profile: sampling process {pid} at {} Hz of its CPU time{}",
        opts.frequency,
        opts.duration
            .map_or(" until Ctrl-C".to_string(), |d| format!(" for {d} s"))
    );

    // Sample; keep the latest mappings (the command may exit before the end).
    let began = Instant::now();
    let mut mappings: Vec<Mapping> = Vec::new();
    let mut comm = String::new();
    loop {
        // A process that exited (a zombie) shows no mappings: keep the last.
        if let Ok(m) = procfs::read_maps(pid).map(|m| {
            m.into_iter()
                .filter(Mapping::is_executable)
                .collect::<Vec<_>>()
        }) {
            if !m.is_empty() {
                mappings = m;
            }
        }
        if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            comm = c.trim().to_string();
        }
        let exited = match &mut child {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        };
        if exited
            || crate::stop::requested()
            || opts
                .duration
                .is_some_and(|d| began.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = registry.remove_link(link);
    session.link = None;
    if let Some(mut c) = child.take() {
        if c.try_wait().ok().flatten().is_none() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let _ = c.wait();
    }

    // Read the counts and stacks, name the frames, fold.
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    let mut symbolizer = Symbolizer::new(pid);
    let (mut total, mut lost) = (0u64, 0u64);
    let per_cpu = counts.syscall_value_size();
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; 8];
    let mut value = vec![0u8; per_cpu];
    let mut frames = vec![0u8; (MAX_FRAMES * 8) as usize];
    while counts.get_next_key(key.as_deref(), &mut next) == Ok(()) {
        key = Some(next.clone());
        if counts.lookup(&next, &mut value).is_err() {
            continue;
        }
        let n: u64 = value
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .sum();
        total += n;
        let id = i64::from_le_bytes(next[..8].try_into().expect("8 bytes"));
        if id < 0
            || stacks
                .lookup(&(id as u32).to_le_bytes(), &mut frames)
                .is_err()
        {
            lost += n;
            continue;
        }
        let ips: Vec<u64> = frames
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .take_while(|&ip| ip != 0)
            .collect();
        let mut names: Vec<String> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| symbolizer.name(&mappings, ip, i > 0))
            .collect();
        names.reverse();
        let line = format!(
            "{};{}",
            if comm.is_empty() { "[unknown]" } else { &comm },
            names.join(";")
        );
        *folded.entry(line).or_default() += n;
    }
    drop(session);
    if total == 0 {
        eprintln!("userbpf profile: no samples (the process used no CPU, or its agent did not see the probe)");
    } else if lost > 0 {
        eprintln!("userbpf profile: {lost} of {total} samples had no user stack");
    }
    let lines: Vec<String> = folded
        .iter()
        .map(|(stack, n)| format!("{stack} {n}"))
        .collect();
    match opts.svg {
        None => {
            for line in &lines {
                println!("{line}");
            }
        }
        Some(path) => {
            let file = std::fs::File::create(&path)
                .map_err(|e| failed(&format!("creating {}", path.display()), e))?;
            let mut options = inferno::flamegraph::Options::default();
            options.title = format!(
                "{comm} (pid {pid}), {total} samples at {} Hz",
                opts.frequency
            );
            options.count_name = "samples".into();
            inferno::flamegraph::from_lines(
                &mut options,
                lines.iter().map(String::as_str),
                std::io::BufWriter::new(file),
            )
            .map_err(|e| failed(&format!("writing {}", path.display()), e))?;
            eprintln!(
                "userbpf profile: {total} samples, flame graph in {}",
                path.display()
            );
        }
    }
    Ok(exit::OK)
}
