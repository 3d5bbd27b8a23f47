//! `userbpf list`, `userbpf map dump`, `userbpf prog dump`: reading the
//! registry (through `shm-maps`) and printing it for people or as JSON.
//!
//! Which processes carry the objects is not recorded in the registry: it is
//! found by scanning `/proc/*/maps` for the userbpf libraries, and an
//! attachment is shown against every agent-carrying process that maps its
//! target file and passes its pid filter.

use crate::error::{exit, CliError, CliResult};
use crate::locate::Library;
use crate::output::{print_json, print_table};
use crate::procfs::{self, Mapping};
use serde::Serialize;
use shm_maps::{map_type, Errno, LinkKind, LinkRecord, MapInfo, OwnerInfo, ProgRecord, Registry};
use std::collections::HashMap;
use std::path::PathBuf;

/// Opens the registry read-only (nothing created, no owner registered, no
/// reaping); `None` when it does not exist yet.
fn open_registry() -> CliResult<(PathBuf, Option<Registry>)> {
    let dir = shm_maps::default_dir();
    match std::fs::symlink_metadata(dir.join("registry")) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(not_yours(&dir)),
        Err(_) => return Ok((dir, None)),
    }
    let registry = Registry::open_existing(&dir).map_err(|e| {
        let hint = match &e {
            shm_maps::Error::UnsafeDir { .. } => "`userbpf doctor` checks the directory",
            _ => "`userbpf doctor` checks the registry directory; USERBPF_DIR selects another one",
        };
        CliError::with_code(exit::ENVIRONMENT, format!("cannot open the registry: {e}")).hint(hint)
    })?;
    Ok((dir, Some(registry)))
}

/// The registry directory exists but this user may not look inside: it is
/// another user's (registries are private to their user by default).
fn not_yours(dir: &std::path::Path) -> CliError {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let whose = std::fs::metadata(dir).map(|m| (m.uid(), m.mode() & 0o7777));
    let detail = match whose {
        Ok((uid, mode)) => format!("it belongs to uid {uid} (mode {mode:04o}) and you are uid {euid}"),
        Err(_) => format!("you are uid {euid} and may not look inside"),
    };
    CliError::with_code(exit::ENVIRONMENT, format!("cannot read the registry {}: {detail}", dir.display())).hint(
        "registries are private to their user: run userbpf as that user, or set USERBPF_DIR to your own; \
         to share one, give it a common group with mode 0770 and set USERBPF_SHARED=1",
    )
}

fn require_registry() -> CliResult<Registry> {
    match open_registry()? {
        (_, Some(registry)) => Ok(registry),
        (dir, None) => Err(CliError::with_code(
            exit::NOT_FOUND,
            format!("no registry at {} (nothing has been loaded yet)", dir.display()),
        )
        .hint("run a loader with `userbpf bpftrace …` or `userbpf load …`; USERBPF_DIR selects another directory")),
    }
}

/// Kernel name of a program type (`enum bpf_prog_type`).
fn prog_type_name(prog_type: u32) -> String {
    match prog_type {
        1 => "SOCKET_FILTER".into(),
        2 => "KPROBE".into(),
        5 => "TRACEPOINT".into(),
        7 => "PERF_EVENT".into(),
        17 => "RAW_TRACEPOINT".into(),
        26 => "TRACING".into(),
        other => format!("type {other}"),
    }
}

fn link_kind_name(kind: LinkKind) -> &'static str {
    match kind {
        LinkKind::Uprobe => "uprobe",
        LinkKind::Uretprobe => "uretprobe",
        LinkKind::PerfEvent => "perf_event",
        LinkKind::Tracepoint => "tracepoint",
    }
}

#[derive(Serialize)]
struct MapRow {
    id: u32,
    name: String,
    #[serde(rename = "type")]
    map_type: &'static str,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    /// Live elements (hash-family maps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<u32>,
    owner: u32,
    owner_alive: bool,
}

#[derive(Serialize)]
struct ProgRow {
    id: u32,
    name: String,
    #[serde(rename = "type")]
    prog_type: String,
    instructions: usize,
    map_ids: Vec<u32>,
    owner: u32,
    owner_alive: bool,
}

#[derive(Serialize)]
struct LinkRow {
    id: u32,
    kind: &'static str,
    prog_id: u32,
    enabled: bool,
    /// `path:0xoffset` for uprobes, `config N` for perf events and tracepoints.
    target: String,
    /// Pid filter as the loader saw it; null = every process.
    pid_filter: Option<i32>,
    owner: u32,
    owner_alive: bool,
    /// Agent-carrying processes whose agent reports the probe installed.
    processes: Vec<i32>,
    /// Program runs there, summed over those processes, as their agents
    /// last reported them (every 200 ms while they have probes).
    hits: u64,
}

#[derive(Serialize)]
struct ProcessRow {
    pid: i32,
    command: String,
    /// `agent` (an app running programs) or `loader` (a bpftrace-like tool).
    role: &'static str,
}

/// A process registered in the registry (loaders and agents register when
/// they open it); objects name their creator by owner id.
#[derive(Serialize)]
struct OwnerRow {
    id: u32,
    /// Pid as the process saw itself (its own pid namespace); null if unknown.
    pid: Option<i32>,
    /// `loader`, `agent`, … as the process declared it; null if it did not.
    role: Option<String>,
    alive: bool,
}

#[derive(Serialize)]
struct Listing {
    registry: String,
    maps: Vec<MapRow>,
    programs: Vec<ProgRow>,
    attachments: Vec<LinkRow>,
    owners: Vec<OwnerRow>,
    /// Processes visible from here with a userbpf library mapped.
    processes: Vec<ProcessRow>,
}

/// Processes (visible to us) with a userbpf library mapped, and their mappings.
fn userbpf_processes() -> Vec<(ProcessRow, Vec<Mapping>)> {
    let me = std::process::id() as i32;
    procfs::all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let maps = procfs::read_maps(pid).ok()?;
            let has = |lib: Library| maps.iter().any(|m| m.file_name() == Some(lib.file_name()));
            let role = if has(Library::Agent) {
                "agent"
            } else if has(Library::SyscallServer) {
                "loader"
            } else {
                return None;
            };
            Some((ProcessRow { pid, command: procfs::command_name(pid), role }, maps))
        })
        .collect()
}

fn link_applies_to(link: &LinkRecord, pid: i32, maps: &[Mapping]) -> bool {
    if link.pid >= 0 && link.pid != pid {
        return false;
    }
    if link.kind == LinkKind::PerfEvent {
        return true; // profile: every thread of the process is sampled
    }
    if !matches!(link.kind, LinkKind::Uprobe | LinkKind::Uretprobe) {
        return false;
    }
    maps.iter().any(|m| {
        if link.inode != 0 && m.inode != 0 {
            m.inode == link.inode && m.dev == link.dev
        } else {
            m.file() == Some(link.target_path.as_str())
        }
    })
}

/// The links each agent on this registry reports installed, by the pid
/// the agent sees itself as (`procfs::own_pid`).
fn installed_links(owners: &[OwnerInfo]) -> HashMap<i32, shm_maps::AgentStatus> {
    owners
        .iter()
        .filter(|o| o.alive && o.role == "agent")
        .map(|o| (o.pid, shm_maps::AgentStatus::parse(&o.status).unwrap_or_default()))
        .collect()
}

fn build_listing(dir: PathBuf, registry: Option<&Registry>) -> Listing {
    let processes = userbpf_processes();
    let alive = |owner: u32| registry.is_some_and(|r| r.owner_alive(owner));
    let (maps, progs, links, owners) = match registry {
        Some(r) => (r.maps(), r.progs(), r.links(), r.owners()),
        None => (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
    };
    let maps = maps
        .into_iter()
        .map(|m: MapInfo| {
            let hash_family = matches!(
                m.map_type,
                map_type::HASH | map_type::PERCPU_HASH | map_type::LRU_HASH | map_type::LRU_PERCPU_HASH
            );
            let entries = if hash_family { registry.and_then(|r| r.open_map(m.id).ok()).map(|map| map.len()) } else { None };
            MapRow {
                id: m.id,
                name: m.name.clone(),
                map_type: map_type::name(m.map_type),
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                entries,
                owner: m.owner,
                owner_alive: alive(m.owner),
            }
        })
        .collect();
    let programs = progs
        .into_iter()
        .map(|p: ProgRecord| ProgRow {
            id: p.id,
            name: p.name.clone(),
            prog_type: prog_type_name(p.prog_type),
            instructions: p.insns.len() / 8,
            map_ids: p.map_ids.clone(),
            owner: p.owner,
            owner_alive: alive(p.owner),
        })
        .collect();
    // A probe is shown in a process only when that process's agent, on
    // this registry, reports it installed: not merely because the process
    // maps the file (its agent may be detached, on another registry, or
    // have dropped the probe of a dead loader).
    let installed = installed_links(&owners);
    let attachments = links
        .into_iter()
        .map(|l: LinkRecord| {
            let in_processes: Vec<i32> = processes
                .iter()
                .filter(|(p, maps)| {
                    p.role == "agent"
                        && link_applies_to(&l, p.pid, maps)
                        && installed.get(&procfs::own_pid(p.pid)).is_some_and(|s| s.links.contains(&l.id))
                })
                .map(|(p, _)| p.pid)
                .collect();
            let hits = in_processes
                .iter()
                .filter_map(|&pid| installed.get(&procfs::own_pid(pid)))
                .flat_map(|s| s.hits.iter())
                .filter(|(id, _)| *id == l.id)
                .map(|(_, n)| n)
                .sum();
            LinkRow {
                id: l.id,
                kind: link_kind_name(l.kind),
                prog_id: l.prog_id,
                enabled: l.enabled,
                target: match l.kind {
                    LinkKind::Uprobe | LinkKind::Uretprobe => format!("{}:{:#x}", l.target_path, l.file_offset),
                    LinkKind::PerfEvent => format!("cpu-clock every {} ns, cpu {}", l.sample_period, if l.cpu < 0 { "any".to_string() } else { l.cpu.to_string() }),
                    _ => format!("config {}", l.config),
                },
                pid_filter: (l.pid >= 0).then_some(l.pid),
                owner: l.owner,
                owner_alive: alive(l.owner),
                processes: in_processes,
                hits,
            }
        })
        .collect();
    let owners = owners
        .into_iter()
        .map(|o: OwnerInfo| OwnerRow {
            id: o.id,
            pid: (o.pid >= 0).then_some(o.pid),
            role: (!o.role.is_empty()).then(|| o.role.clone()),
            alive: o.alive,
        })
        .collect();
    Listing {
        registry: dir.display().to_string(),
        maps,
        programs,
        attachments,
        owners,
        processes: processes.into_iter().map(|(p, _)| p).collect(),
    }
}

/// How an object's owner is shown: its id, and the pid/role it registered.
fn owner_text(owner: u32, alive: bool, owners: &HashMap<u32, &OwnerRow>) -> String {
    let mut text = owner.to_string();
    if let Some(row) = owners.get(&owner) {
        let mut about = Vec::new();
        if let Some(pid) = row.pid {
            about.push(format!("pid {pid}"));
        }
        if let Some(role) = &row.role {
            about.push(role.clone());
        }
        if !about.is_empty() {
            text.push_str(&format!(" ({})", about.join(" ")));
        }
    }
    if !alive {
        text.push_str(" gone");
    }
    text
}

/// `userbpf list`.
pub fn list(json: bool) -> CliResult {
    let (dir, registry) = open_registry()?;
    let listing = build_listing(dir, registry.as_ref());
    if json {
        print_json(&listing);
        return Ok(exit::OK);
    }
    println!("registry {}{}", listing.registry, if registry.is_none() { " (not created yet)" } else { "" });
    let owners: HashMap<u32, &OwnerRow> = listing.owners.iter().map(|o| (o.id, o)).collect();
    print_section("maps", &listing.maps, &["ID", "TYPE", "KEY/VALUE", "ENTRIES", "OWNER", "NAME"], |m| {
        vec![
            m.id.to_string(),
            m.map_type.to_string(),
            format!("{}/{}", m.key_size, m.value_size),
            m.entries.map_or(format!("-/{}", m.max_entries), |n| format!("{n}/{}", m.max_entries)),
            owner_text(m.owner, m.owner_alive, &owners),
            m.name.clone(),
        ]
    });
    print_section("programs", &listing.programs, &["ID", "TYPE", "INSNS", "MAPS", "OWNER", "NAME"], |p| {
        vec![
            p.id.to_string(),
            p.prog_type.clone(),
            p.instructions.to_string(),
            comma_list_or_dash(&p.map_ids),
            owner_text(p.owner, p.owner_alive, &owners),
            p.name.clone(),
        ]
    });
    print_section(
        "attachments",
        &listing.attachments,
        &["ID", "KIND", "PROG", "ENABLED", "PID", "IN", "HITS", "OWNER", "TARGET"],
        |l| {
            vec![
                l.id.to_string(),
                l.kind.to_string(),
                l.prog_id.to_string(),
                if l.enabled { "yes".into() } else { "no".into() },
                l.pid_filter.map_or("any".into(), |p| p.to_string()),
                comma_list_or_dash(&l.processes),
                l.hits.to_string(),
                owner_text(l.owner, l.owner_alive, &owners),
                l.target.clone(),
            ]
        },
    );
    print_section("registered processes", &listing.owners, &["OWNER", "PID", "ROLE", "ALIVE"], |o| {
        vec![
            o.id.to_string(),
            o.pid.map_or("?".into(), |p| p.to_string()),
            o.role.clone().unwrap_or_else(|| "-".into()),
            if o.alive { "yes".into() } else { "no".into() },
        ]
    });
    print_section(
        "processes with userbpf libraries (pids as seen here)",
        &listing.processes,
        &["PID", "ROLE", "COMMAND"],
        |p| vec![p.pid.to_string(), p.role.to_string(), p.command.clone()],
    );
    Ok(exit::OK)
}

/// One section of `userbpf list`: a blank line, `TITLE: COUNT`, then a table
/// of the items when there are any.
fn print_section<T>(title: &str, items: &[T], headers: &[&str], row: impl Fn(&T) -> Vec<String>) {
    println!("\n{title}: {}", items.len());
    if !items.is_empty() {
        let rows: Vec<Vec<String>> = items.iter().map(row).collect();
        print_table(headers, &rows);
    }
}

/// `1,2,3`, or `-` for none.
fn comma_list_or_dash<T: ToString>(values: &[T]) -> String {
    if values.is_empty() {
        "-".into()
    } else {
        values.iter().map(T::to_string).collect::<Vec<_>>().join(",")
    }
}

/// Finds a map by id, exact name, or bpftrace name (`@x` is stored as `AT_x`,
/// names cut to the kernel's 15 characters).
fn find_map(registry: &Registry, wanted: &str) -> CliResult<MapInfo> {
    if let Ok(id) = wanted.parse::<u32>() {
        return registry.map_info(id).map_err(|e| match e {
            shm_maps::Error::NotFound { .. } => CliError::with_code(exit::NOT_FOUND, format!("no map with id {id}"))
                .hint("`userbpf list` shows the maps"),
            other => CliError::new(format!("cannot read map {id}: {other}")),
        });
    }
    let mut candidates = vec![wanted.to_string()];
    if let Some(rest) = wanted.strip_prefix('@') {
        candidates.push(format!("AT_{rest}"));
    }
    let truncated: Vec<String> = candidates.iter().map(|c| c.chars().take(15).collect()).collect();
    let maps = registry.maps();
    let matches: Vec<&MapInfo> =
        maps.iter().filter(|m| candidates.contains(&m.name) || truncated.contains(&m.name)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CliError::with_code(exit::NOT_FOUND, format!("no map named {wanted}")).hint("`userbpf list` shows the maps")),
        several => {
            let ids: Vec<String> = several.iter().map(|m| m.id.to_string()).collect();
            Err(CliError::with_code(exit::USAGE, format!("{} maps are named {wanted} (ids {})", several.len(), ids.join(", ")))
                .hint("name the map by id"))
        }
    }
}

/// An unsigned integer of 1, 2, 4 or 8 little-endian bytes.
fn as_integer(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        1 => Some(bytes[0] as u64),
        2 => Some(u16::from_le_bytes(bytes.try_into().ok()?) as u64),
        4 => Some(u32::from_le_bytes(bytes.try_into().ok()?) as u64),
        8 => Some(u64::from_le_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

/// Printable text followed only by NULs (bpftrace string keys), if that is what `bytes` hold.
fn as_text(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let (text, padding) = bytes.split_at(end);
    let printable = !text.is_empty() && text.iter().all(|&b| (0x20..0x7f).contains(&b));
    (printable && padding.iter().all(|&b| b == 0) && bytes.len() > 8).then(|| String::from_utf8_lossy(text).into_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// One decoded key or value.
#[derive(Serialize)]
struct Datum {
    hex: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    int: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

impl Datum {
    fn of(bytes: &[u8]) -> Datum {
        Datum { hex: hex(bytes), int: as_integer(bytes), text: as_text(bytes) }
    }

    fn show(&self) -> String {
        match (&self.text, self.int) {
            (Some(text), _) => format!("{text:?}"),
            (None, Some(n)) => n.to_string(),
            (None, None) => self.hex.clone(),
        }
    }
}

#[derive(Serialize)]
struct Entry {
    key: Datum,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Datum>,
    /// Per-CPU maps: the value of each CPU, and their sum when values are integers.
    #[serde(skip_serializing_if = "Option::is_none")]
    per_cpu: Option<Vec<Datum>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sum: Option<u128>,
}

#[derive(Serialize)]
struct MapDump {
    id: u32,
    name: String,
    #[serde(rename = "type")]
    map_type: &'static str,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    entries: Vec<Entry>,
}

/// Splits a per-CPU syscall value into its CPUs' values (slots 8-byte aligned).
fn split_per_cpu(value: &[u8], value_size: usize, nr_cpus: usize) -> Vec<&[u8]> {
    let stride = value_size.div_ceil(8) * 8;
    (0..nr_cpus).filter_map(|cpu| value.get(cpu * stride..cpu * stride + value_size)).collect()
}

/// `userbpf map dump`.
pub fn map_dump(wanted: &str, json: bool) -> CliResult {
    let registry = require_registry()?;
    let info = find_map(&registry, wanted)?;
    let dumpable = matches!(
        info.map_type,
        map_type::HASH
            | map_type::ARRAY
            | map_type::PERCPU_HASH
            | map_type::PERCPU_ARRAY
            | map_type::LRU_HASH
            | map_type::LRU_PERCPU_HASH
            | map_type::PROG_ARRAY
            | map_type::PERF_EVENT_ARRAY
            | map_type::STACK_TRACE
            | map_type::LPM_TRIE
    );
    if !dumpable {
        return Err(CliError::new(format!(
            "map {} ({}) is a {} map, which has no keys to dump",
            info.id,
            info.name,
            map_type::name(info.map_type)
        )));
    }
    let map = registry.open_map(info.id).map_err(|e| CliError::new(format!("cannot open map {}: {e}", info.id)))?;
    let (percpu, nr_cpus) = (map.is_percpu(), map.nr_cpus() as usize);
    let mut entries = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; info.key_size as usize];
    let mut value = vec![0u8; map.syscall_value_size()];
    // Keys can vanish between get_next_key and lookup (a live map): skip those.
    // The walk is bounded by max_entries (plus slack for concurrent churn).
    for _ in 0..(info.max_entries as u64 * 2 + 16) {
        match map.get_next_key(key.as_deref(), &mut next) {
            Ok(()) => {}
            Err(Errno::ENOENT) => break,
            Err(e) => return Err(CliError::new(format!("walking map {}: {}", info.id, e.name()))),
        }
        key = Some(next.clone());
        match map.lookup(&next, &mut value) {
            Ok(()) => {}
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(CliError::new(format!("reading map {}: {}", info.id, e.name()))),
        }
        let entry = if percpu {
            let slots = split_per_cpu(&value, info.value_size as usize, nr_cpus);
            let sum = slots.iter().map(|s| as_integer(s).map(u128::from)).sum::<Option<u128>>();
            Entry { key: Datum::of(&next), value: None, per_cpu: Some(slots.iter().map(|s| Datum::of(s)).collect()), sum }
        } else {
            Entry { key: Datum::of(&next), value: Some(Datum::of(&value)), per_cpu: None, sum: None }
        };
        entries.push(entry);
    }
    let dump = MapDump {
        id: info.id,
        name: info.name.clone(),
        map_type: map_type::name(info.map_type),
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        entries,
    };
    if json {
        print_json(&dump);
        return Ok(exit::OK);
    }
    println!(
        "map {} {} ({}, key {} B, value {} B, {} of {} entries)",
        dump.id,
        dump.name,
        dump.map_type,
        dump.key_size,
        dump.value_size,
        dump.entries.len(),
        dump.max_entries
    );
    for entry in &dump.entries {
        match (&entry.value, &entry.per_cpu) {
            (Some(value), _) => println!("  {}: {}", entry.key.show(), value.show()),
            (None, Some(per_cpu)) => {
                let cpus: Vec<String> = per_cpu.iter().enumerate().map(|(cpu, v)| format!("cpu{cpu}={}", v.show())).collect();
                let sum = entry.sum.map_or(String::new(), |s| format!("sum {s}  "));
                println!("  {}: {sum}[{}]", entry.key.show(), cpus.join(" "));
            }
            (None, None) => println!("  {}", entry.key.show()),
        }
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct ProgDump {
    id: u32,
    name: String,
    #[serde(rename = "type")]
    prog_type: String,
    license: String,
    map_ids: Vec<u32>,
    instructions: usize,
    disassembly: Vec<String>,
    /// The verifier's verdict recorded when the program was loaded.
    verdict: &'static str,
    verifier_log: String,
    owner: u32,
    owner_alive: bool,
}

/// `userbpf prog dump`.
pub fn prog_dump(id: u32, json: bool) -> CliResult {
    let registry = require_registry()?;
    let prog = registry.prog(id).map_err(|e| match e {
        shm_maps::Error::NotFound { .. } => {
            CliError::with_code(exit::NOT_FOUND, format!("no program with id {id}")).hint("`userbpf list` shows the programs")
        }
        other => CliError::new(format!("cannot read program {id}: {other}")),
    })?;
    let insns = vm::insn::decode_all(&prog.insns);
    let listing = vm::disasm::listing(&insns);
    let dump = ProgDump {
        id: prog.id,
        name: prog.name.clone(),
        prog_type: prog_type_name(prog.prog_type),
        license: prog.license.clone(),
        map_ids: prog.map_ids.clone(),
        instructions: insns.len(),
        disassembly: listing.lines().map(str::to_string).collect(),
        // Only programs the verifier accepted are stored in the registry.
        verdict: "accepted",
        verifier_log: prog.verifier_log.clone(),
        owner: prog.owner,
        owner_alive: registry.owner_alive(prog.owner),
    };
    if json {
        print_json(&dump);
        return Ok(exit::OK);
    }
    let maps: Vec<String> = dump.map_ids.iter().map(u32::to_string).collect();
    println!(
        "program {} {} ({}, {} instructions, license {}, maps {})",
        dump.id,
        dump.name,
        dump.prog_type,
        dump.instructions,
        if dump.license.is_empty() { "-" } else { &dump.license },
        if maps.is_empty() { "-".to_string() } else { maps.join(",") }
    );
    print!("{listing}");
    println!("verifier: {} at load", dump.verdict);
    let log = dump.verifier_log.trim_end();
    if !log.is_empty() {
        for line in log.lines() {
            println!("  {line}");
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_are_split_on_8_byte_slots() {
        let mut value = Vec::new();
        for cpu in 0..3u32 {
            value.extend_from_slice(&(cpu + 1).to_le_bytes());
            value.extend_from_slice(&[0xee; 4]); // padding up to 8 bytes
        }
        let slots = split_per_cpu(&value, 4, 3);
        assert_eq!(slots.iter().map(|s| as_integer(s).unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn data_are_shown_as_text_integer_or_hex() {
        assert_eq!(Datum::of(&7u64.to_le_bytes()).show(), "7");
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"bash");
        assert_eq!(Datum::of(&comm).show(), "\"bash\"");
        assert_eq!(Datum::of(&[1, 2, 3]).show(), "01 02 03");
    }
}
