//! `userbpf attach PID` and `userbpf detach PID`: loading the agent into an
//! already running process, and asking that agent to remove every probe.
//! Both borrow one thread of the target through [`crate::inject`].

use crate::elfsym::{self, SymbolError};
use crate::error::{exit, os_error_text, CliError, CliResult};
use crate::inject::{check_traceable, PauseReport, StoppedThread};
use crate::locate::{self, Library};
use crate::output::print_json;
use crate::procfs;
use std::path::PathBuf;
use std::time::Duration;

/// The agent's exported function that removes every probe of its process
/// (see docs/requests/agent.md): `int userbpf_agent_detach(void)`, returning
/// the number of probes removed or a negative errno.
pub const AGENT_DETACH_SYMBOL: &str = "userbpf_agent_detach";

/// The agent's optional exported function that undoes [`AGENT_DETACH_SYMBOL`]
/// (`int userbpf_agent_reattach(void)`, returning the number of probes
/// re-attached — 0 when the agent's watcher re-attaches them itself — or a
/// negative errno); `attach` calls it when the agent is already loaded.
pub const AGENT_REATTACH_SYMBOL: &str = "userbpf_agent_reattach";

const RTLD_NOW: u64 = 0x2;
/// glibc's private flag `__libc_dlopen_mode` needs to behave like `dlopen`.
const RTLD_DLOPEN: u64 = 0x8000_0000;

/// Options of `userbpf attach`.
pub struct AttachOptions {
    pub pid: i32,
    /// Library to load instead of `libagent.so`.
    pub library: Option<PathBuf>,
    pub timeout: Duration,
    pub json: bool,
}

#[derive(serde::Serialize)]
struct AttachOutcome {
    pid: i32,
    command: String,
    library: String,
    already_loaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pause_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    call_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread: Option<i32>,
    /// Probes the agent reported live after loading (none: not reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    probes_live: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safe_point_attempts: Option<u32>,
    /// Already loaded agent: probes it re-attached through `userbpf_agent_reattach`.
    #[serde(skip_serializing_if = "Option::is_none")]
    probes_reattached: Option<u64>,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Resolves a function of the target's C library.
fn libc_function(pid: i32, maps: &[procfs::Mapping], names: &[&'static str]) -> CliResult<(&'static str, u64)> {
    let libc_map = elfsym::find_object(maps, elfsym::is_libc).ok_or_else(|| {
        CliError::with_code(exit::ENVIRONMENT, format!("process {pid} does not use glibc's libc.so.6 (static binary or another libc)"))
            .hint("attach needs glibc's dlopen in the target; start the app with `userbpf run` instead")
    })?;
    elfsym::resolve_in_process(pid, libc_map, names).map_err(|e| {
        let what = names.join(" or ");
        match e {
            SymbolError::Read(err) => CliError::new(format!(
                "cannot read the C library of process {pid} ({}): {}",
                libc_map.path,
                os_error_text(&err)
            )),
            SymbolError::Parse(why) => CliError::new(format!("cannot read symbols of {}: {why}", libc_map.path)),
            SymbolError::Missing => CliError::with_code(
                exit::ENVIRONMENT,
                format!("the C library of process {pid} ({}) exports no {what}", libc_map.path),
            ),
            SymbolError::Mismatch(why) => mismatch_error(why),
        }
    })
}

fn mismatch_error(why: String) -> CliError {
    CliError::with_code(exit::ENVIRONMENT, why).hint("restart the app (then `userbpf run` can preload the agent)")
}


/// `userbpf attach PID`.
pub fn attach(options: &AttachOptions) -> CliResult {
    let pid = options.pid;
    check_traceable(pid)?;
    let library = match &options.library {
        Some(path) => path.canonicalize().map_err(|e| {
            CliError::with_code(exit::NOT_FOUND, format!("cannot use library {}: {}", path.display(), os_error_text(&e)))
        })?,
        None => locate::find_compatible(Library::Agent)?,
    };
    let library_text = library
        .to_str()
        .filter(|s| !s.contains('\0'))
        .ok_or_else(|| CliError::new(format!("library path {} is not valid UTF-8", library.display())))?
        .to_string();
    let command = procfs::command_name(pid);
    let maps = procfs::read_maps(pid)
        .map_err(|e| CliError::new(format!("cannot read /proc/{pid}/maps: {}", os_error_text(&e))))?;

    // The library itself, or (when loading the agent) any libagent.so: two
    // agents in one process would attach every probe twice.
    let loaded = maps.iter().find(|m| {
        m.offset == 0
            && (m.file() == Some(library_text.as_str())
                || (options.library.is_none() && m.file_name() == Some(Library::Agent.file_name())))
    });
    if let Some(loaded) = loaded {
        return already_loaded(options, &command, loaded);
    }
    if !procfs::path_in_process_root(pid, &library_text).exists() {
        return Err(CliError::with_code(
            exit::ENVIRONMENT,
            format!("process {pid} ({command}) cannot see {library_text} (it runs in another mount namespace or chroot)"),
        )
        .hint("make the library visible inside the target's filesystem at the same path (e.g. a bind mount)"));
    }
    let (dlopen_name, dlopen) = libc_function(pid, &maps, &["dlopen", "__libc_dlopen_mode"])?;
    let dlerror = libc_function(pid, &maps, &["dlerror"]).ok().map(|(_, addr)| addr);
    let flags = if dlopen_name == "dlopen" { RTLD_NOW } else { RTLD_NOW | RTLD_DLOPEN };
    warn_about_registry_dir(pid);
    // The registry as it is now: attach waits until the agent's probes
    // reflect at least this generation.
    let before = RegistryWatch::open(pid);

    if !options.json {
        eprintln!("userbpf: attaching to process {pid} ({command}): stopping one thread to load {library_text}…");
    }
    let mut thread = StoppedThread::stop(pid, options.timeout)?;
    let mut path_bytes = library_text.clone().into_bytes();
    path_bytes.push(0);
    let handle = thread.call(dlopen, &path_bytes, |path| vec![path, flags], options.timeout, dlopen_name)?;
    let failure = if handle == 0 {
        let reason = match dlerror {
            Some(dlerror) => match thread.call(dlerror, &[], |_| vec![], options.timeout, "dlerror")? {
                0 => "no reason given".to_string(),
                message => thread.read_string(message),
            },
            None => "dlerror is not available".to_string(),
        };
        Some(reason)
    } else {
        None
    };
    let report: PauseReport = thread.resume()?;
    crate::ptrace::release_held_signals();
    if let Some(reason) = failure {
        return Err(CliError::new(format!("the dynamic loader of process {pid} refused {library_text}: {reason}"))
            .hint(format!("the app was resumed unchanged after a pause of {:.2} ms", millis(report.paused))));
    }
    // No registry before: the agent made it; any report of it will do.
    let watch = before.or_else(|| RegistryWatch::open(pid).map(|w| RegistryWatch { generation: 0, ..w }));
    let live = watch.and_then(|w| w.wait_for_agent(PROBES_LIVE_TIMEOUT));
    let outcome = AttachOutcome {
        pid,
        command: command.clone(),
        library: library_text.clone(),
        already_loaded: false,
        pause_ms: Some(millis(report.paused)),
        call_ms: Some(millis(report.call_time)),
        thread: Some(report.tid),
        safe_point_attempts: Some(report.attempts),
        probes_reattached: None,
        probes_live: live,
    };
    if options.json {
        print_json(&outcome);
    } else {
        println!(
            "attached to process {pid} ({command}): loaded {library_text}; thread {} was paused for {:.2} ms ({:.2} ms in {dlopen_name})",
            report.tid,
            millis(report.paused),
            millis(report.call_time)
        );
        match live {
            Some(n) => println!("{n} probe(s) live in process {pid}"),
            None if options.library.is_none() => eprintln!(
                "userbpf: warning: the agent in process {pid} has not reported its probes within {} s; \
                 they may not be live yet (`userbpf list` shows them)",
                PROBES_LIVE_TIMEOUT.as_secs()
            ),
            None => {}
        }
    }
    Ok(exit::OK)
}

/// How long `attach` waits for the new agent to report its probes live.
const PROBES_LIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The target's registry (its own `USERBPF_DIR`, else the default for the
/// user) and its generation before the agent was loaded.
struct RegistryWatch {
    registry: shm_maps::Registry,
    generation: u32,
    /// The target's pid as it sees itself (its innermost pid namespace),
    /// which is how the agent records it.
    own_pid: i32,
}

impl RegistryWatch {
    fn open(pid: i32) -> Option<RegistryWatch> {
        let dir = procfs::environment_variable(pid, "USERBPF_DIR")
            .ok()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(shm_maps::default_dir);
        let registry = shm_maps::Registry::open_existing(&dir).ok()?;
        Some(RegistryWatch { generation: registry.generation(), registry, own_pid: procfs::own_pid(pid) })
    }

    /// The number of probes the target's agent has live once it reports
    /// having reconciled with the registry as of `open` (or later), or
    /// `None` after `timeout`.
    fn wait_for_agent(&self, timeout: Duration) -> Option<u64> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let report = self.registry.owners().into_iter().find_map(|o| {
                if o.pid != self.own_pid || !o.alive || o.role != "agent" {
                    return None;
                }
                let status = shm_maps::AgentStatus::parse(&o.status)?;
                // Generations only grow (wrapping u32).
                (status.generation.wrapping_sub(self.generation) < u32::MAX / 2).then_some(status.probes as u64)
            });
            if report.is_some() || std::time::Instant::now() >= deadline {
                return report;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `attach` on a process that already has the library: re-enable the agent's
/// probes if it was detached (and can be re-attached), else nothing to do.
fn already_loaded(options: &AttachOptions, command: &str, loaded: &procfs::Mapping) -> CliResult {
    let pid = options.pid;
    let path = loaded.file().unwrap_or(&loaded.path).to_string();
    let reattach = match elfsym::resolve_in_process(pid, loaded, &[AGENT_REATTACH_SYMBOL]) {
        Ok((_, addr)) => Some(addr),
        Err(SymbolError::Missing) => None,
        Err(SymbolError::Read(e)) => return Err(CliError::new(format!("cannot read {path}: {}", os_error_text(&e)))),
        Err(SymbolError::Parse(why)) => return Err(CliError::new(format!("cannot read symbols of {path}: {why}"))),
        Err(SymbolError::Mismatch(why)) => return Err(mismatch_error(why)),
    };
    let mut outcome = AttachOutcome {
        pid,
        command: command.to_string(),
        library: path.clone(),
        already_loaded: true,
        pause_ms: None,
        call_ms: None,
        thread: None,
        safe_point_attempts: None,
        probes_reattached: None,
        probes_live: None,
    };
    if let Some(reattach) = reattach {
        let mut thread = StoppedThread::stop(pid, options.timeout)?;
        let result = thread.call(reattach, &[], |_| vec![], options.timeout, AGENT_REATTACH_SYMBOL)? as i32;
        let report = thread.resume()?;
        crate::ptrace::release_held_signals();
        if result < 0 {
            let err = std::io::Error::from_raw_os_error(-result);
            return Err(CliError::new(format!("the agent in process {pid} could not re-attach its probes: {}", os_error_text(&err))));
        }
        outcome.probes_reattached = Some(result as u64);
        outcome.pause_ms = Some(millis(report.paused));
        outcome.call_ms = Some(millis(report.call_time));
        outcome.thread = Some(report.tid);
        outcome.safe_point_attempts = Some(report.attempts);
    }
    if options.json {
        print_json(&outcome);
    } else if let Some(n) = outcome.probes_reattached {
        let what = if n > 0 { format!("re-attached {n} probe(s)") } else { "resumed attaching the registry's probes".to_string() };
        println!(
            "process {pid} ({command}) already has {path} loaded; its agent {what} (paused {:.2} ms)",
            outcome.pause_ms.unwrap_or(0.0)
        );
    } else {
        println!("process {pid} ({command}) already has {path} loaded; nothing to do");
    }
    Ok(exit::OK)
}

/// The agent finds the registry through the target's own `$USERBPF_DIR`,
/// which was fixed when the target started: say so if it differs from ours.
fn warn_about_registry_dir(pid: i32) {
    let ours = std::env::var("USERBPF_DIR").ok().filter(|s| !s.is_empty());
    let theirs = procfs::environment_variable(pid, "USERBPF_DIR").ok().flatten().filter(|s| !s.is_empty());
    if ours != theirs {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "unset (the default directory)".to_string());
        eprintln!(
            "userbpf: warning: USERBPF_DIR is {} here but {} in process {pid}; the agent uses the process's own",
            show(&ours),
            show(&theirs)
        );
    }
}

/// Options of `userbpf detach`.
pub struct DetachOptions {
    pub pid: i32,
    pub timeout: Duration,
    pub json: bool,
}

#[derive(serde::Serialize)]
struct DetachOutcome {
    pid: i32,
    command: String,
    probes_removed: u64,
    pause_ms: f64,
}

/// `userbpf detach PID`.
pub fn detach(options: &DetachOptions) -> CliResult {
    let pid = options.pid;
    check_traceable(pid)?;
    let command = procfs::command_name(pid);
    let maps = procfs::read_maps(pid)
        .map_err(|e| CliError::new(format!("cannot read /proc/{pid}/maps: {}", os_error_text(&e))))?;
    let agent = elfsym::find_object(&maps, |name| name == Library::Agent.file_name()).ok_or_else(|| {
        CliError::with_code(exit::NOT_FOUND, format!("process {pid} ({command}) has no userbpf agent loaded; nothing to detach"))
            .hint(format!("`userbpf attach {pid}` loads it"))
    })?;
    let detach_fn = match elfsym::resolve_in_process(pid, agent, &[AGENT_DETACH_SYMBOL]) {
        Ok((_, addr)) => addr,
        Err(SymbolError::Missing) => {
            return Err(CliError::with_code(
                exit::ENVIRONMENT,
                format!(
                    "the agent in process {pid} ({}) does not export {AGENT_DETACH_SYMBOL}(), so its probes cannot be removed from outside",
                    agent.path
                ),
            )
            .hint("this agent build predates detach support (requested in docs/requests/agent.md); restart the app to drop its probes"))
        }
        Err(SymbolError::Read(e)) => {
            return Err(CliError::new(format!("cannot read {}: {}", agent.path, os_error_text(&e))))
        }
        Err(SymbolError::Parse(why)) => return Err(CliError::new(format!("cannot read symbols of {}: {why}", agent.path))),
        Err(SymbolError::Mismatch(why)) => return Err(mismatch_error(why)),
    };
    if !options.json {
        eprintln!("userbpf: detaching from process {pid} ({command}): asking its agent to remove every probe…");
    }
    let mut thread = StoppedThread::stop(pid, options.timeout)?;
    let result = thread.call(detach_fn, &[], |_| vec![], options.timeout, AGENT_DETACH_SYMBOL)? as i32;
    let report = thread.resume()?;
    crate::ptrace::release_held_signals();
    if result < 0 {
        let err = std::io::Error::from_raw_os_error(-result);
        return Err(CliError::new(format!(
            "the agent in process {pid} could not remove its probes: {}",
            os_error_text(&err)
        )));
    }
    let outcome = DetachOutcome { pid, command: command.clone(), probes_removed: result as u64, pause_ms: millis(report.paused) };
    if options.json {
        print_json(&outcome);
    } else {
        println!(
            "detached from process {pid} ({command}): {} probe(s) removed; the app was paused for {:.2} ms and keeps running",
            outcome.probes_removed, outcome.pause_ms
        );
    }
    Ok(exit::OK)
}
