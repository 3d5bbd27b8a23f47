//! The watcher: one background thread per process that keeps the probes
//! attached here equal to what the registry asks for.
//!
//! It blocks on the registry's generation futex (woken by every registry
//! change, so an enable/disable takes effect within microseconds) with a
//! [`TICK`] timeout while any uprobe link exists (none at all: no timeout).
//! Every wake it reconciles:
//! - *desired*: enabled uprobe/uretprobe attachments whose owner (the
//!   loader) is alive, whose pid filter admits this process, and whose target
//!   file (matched by device and inode, as `/proc/self/maps` or `stat()` of
//!   the mapped path report them: they differ on overlayfs) is mapped
//!   executable here;
//! - attach what is desired but not attached, detach what is attached but
//!   no longer desired (removed, disabled, owner dead, pid filter after fork).
//!
//! The timeout bounds the reaction to what does not bump the generation:
//! a SIGKILLed loader (owner liveness is re-checked every tick, well within
//! the 1 s budget) and libraries `dlopen`ed later (the loader's object
//! count, `dlpi_adds`, is compared every tick and the mappings re-read only
//! when it changed).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shm_maps::{LinkKind, LinkRecord, Registry};

use crate::log;
use crate::probes::{self, ActiveProbe, ProbeKind};
use runtime::LoadedProgram;

/// Longest sleep between reconciliations when nothing changes.
pub const TICK: Duration = Duration::from_millis(200);

/// Everything the agent owns. Lives behind [`STATE`]; only the watcher
/// (and `fork` handlers) lock it, never the probe hit path.
pub struct Agent {
    registry: Registry,
    attached: HashMap<u32, ActiveProbe>,
    programs: HashMap<u32, Arc<LoadedProgram>>,
    /// Probes whose detach failed (they may still fire) or that
    /// `userbpf_agent_detach` asked to keep mapped: never freed.
    retained: Vec<ActiveProbe>,
    /// Attachments that failed, with the generation they failed at: retried
    /// only after the registry or the set of loaded objects changes.
    failed: HashMap<u32, (u32, u64)>,
    /// `dlpi_adds + dlpi_subs` when the mappings were last read.
    objects_epoch: u64,
    mappings: Vec<rewriter::maps::Mapping>,
    /// Per executable file mapping (same order as `mappings`), the
    /// `(st_dev, st_ino)` that `stat()` of its path gives in this process,
    /// when that differs from what `/proc/self/maps` shows (overlayfs shows
    /// the underlying file there, while loaders `stat()` the overlay).
    stat_identity: Vec<Option<(u64, u64)>>,
    /// Set by `userbpf_agent_detach`: attach nothing until resumed.
    suspended: bool,
    /// Whether [`prepare_patching`] ran.
    patching_prepared: bool,
    /// Whether the last reconcile found any uprobe/uretprobe link.
    saw_links: bool,
    /// The uprobe/uretprobe links as of `links_generation`.
    links: Vec<LinkRecord>,
    links_generation: Option<u32>,
    /// USDT semaphores this agent incremented, per attached link: the
    /// address of the `unsigned short` and the file it belongs to.
    semaphores: HashMap<u32, (usize, (u64, u64))>,
    /// `profile:` links (perf events) as of `links_generation`.
    perf_links: Vec<LinkRecord>,
    /// The live `profile:` samplers and their per-thread timers.
    samplers: crate::sampler::Samplers,
}

/// The agent state; `None` until started (or when inert).
pub static STATE: Mutex<Option<Agent>> = Mutex::new(None);

/// Lock the agent state, surviving a poisoned lock (a panic is caught and
/// reported at the FFI boundary; the state itself stays consistent).
pub fn lock_state() -> MutexGuard<'static, Option<Agent>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Agent {
    pub fn new(registry: Registry) -> Agent {
        Agent {
            registry,
            attached: HashMap::new(),
            programs: HashMap::new(),
            retained: Vec::new(),
            failed: HashMap::new(),
            objects_epoch: u64::MAX,
            mappings: Vec::new(),
            stat_identity: Vec::new(),
            suspended: false,
            patching_prepared: false,
            saw_links: false,
            links: Vec::new(),
            links_generation: None,
            semaphores: HashMap::new(),
            perf_links: Vec::new(),
            samplers: Default::default(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Number of probes attached now (for tests and status).
    pub fn attached_count(&self) -> usize {
        self.attached.len()
    }

    /// Bring the attached probes in line with the registry.
    pub fn reconcile(&mut self) {
        let generation = self.registry.generation();
        // Links only change with the generation: re-read them only then, so
        // a wake-up that finds nothing new makes no system call unless a
        // link targets this process (owner liveness).
        if self.links_generation != Some(generation) {
            let (probes, others): (Vec<LinkRecord>, Vec<LinkRecord>) = self
                .registry
                .links()
                .into_iter()
                .partition(|l| matches!(l.kind, LinkKind::Uprobe | LinkKind::Uretprobe));
            self.links = probes;
            self.perf_links = others.into_iter().filter(|l| l.kind == LinkKind::PerfEvent).collect();
            self.links_generation = Some(generation);
        }
        let links = std::mem::take(&mut self.links);
        self.reconcile_with(&links, generation);
        self.links = links;
        self.reconcile_samplers();
    }

    /// `profile:` links: the enabled ones of live loaders that admit this
    /// process are sampled on every thread (see [`crate::sampler`]).
    fn reconcile_samplers(&mut self) {
        if self.perf_links.is_empty() && !self.samplers.active() {
            return;
        }
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let mut wanted = Vec::new();
        if !self.suspended {
            for link in self.perf_links.clone() {
                if !link.enabled || (link.pid >= 0 && link.pid != pid) || !self.registry.owner_alive(link.owner) {
                    continue;
                }
                // The server records the period in nanoseconds.
                let period_us = (link.sample_period / 1000).clamp(crate::sampler::MIN_PERIOD_US as u64, u32::MAX as u64) as u32;
                if !self.patching_prepared {
                    prepare_patching(); // the rewriter's signal handlers deliver the ticks
                    self.patching_prepared = true;
                }
                match self.program(link.prog_id) {
                    Ok(program) => wanted.push(crate::sampler::Sampler {
                        link_id: link.id,
                        cpu: link.cpu,
                        pid_filter: link.pid,
                        period_us,
                        program,
                        hits: Default::default(),
                    }),
                    Err(e) => log::warn(&format!("cannot sample for profile link {}: {e}", link.id)),
                }
            }
        }
        self.samplers.set(wanted);
    }

    /// The program `id`, loaded once and shared by every probe and sampler.
    fn program(&mut self, id: u32) -> Result<Arc<LoadedProgram>, String> {
        if let Some(p) = self.programs.get(&id) {
            return Ok(p.clone());
        }
        let p = Arc::new(LoadedProgram::from_registry(&self.registry, id).map_err(|e| format!("program {id}: {e}"))?);
        if let Some(reason) = p.jit_refusal() {
            log::warn(&format!("program {} ({}) runs interpreted: {reason}", p.id(), p.name()));
        }
        self.programs.insert(id, p.clone());
        Ok(p)
    }

    fn reconcile_with(&mut self, links: &[LinkRecord], generation: u32) {
        self.saw_links = !links.is_empty();
        if self.suspended || (links.is_empty() && self.attached.is_empty()) {
            return;
        }
        let objects_epoch = loaded_objects_epoch();
        if objects_epoch != self.objects_epoch {
            match rewriter::maps::read_self_maps() {
                Ok(m) => {
                    self.stat_identity = stat_identities(&m);
                    self.mappings = m;
                    self.objects_epoch = objects_epoch;
                }
                Err(e) => log::warn(&format!("cannot read this process's mappings: {e}")),
            }
        }
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let mut alive_owners: HashMap<u32, bool> = HashMap::new();
        let mut desired: HashSet<u32> = HashSet::new();
        for link in links {
            let Some(address) = self.address_of(link) else { continue };
            if !self.patching_prepared {
                // A link targets this process (maybe still disabled): do the
                // slow one-time set-up now, before it is enabled.
                prepare_patching();
                self.patching_prepared = true;
            }
            if !link.enabled || (link.pid >= 0 && link.pid != pid) {
                continue;
            }
            let owner_alive =
                *alive_owners.entry(link.owner).or_insert_with(|| self.registry.owner_alive(link.owner));
            if !owner_alive {
                continue;
            }
            desired.insert(link.id);
            if self.attached.contains_key(&link.id) {
                continue;
            }
            if let Some(&(at_generation, at_objects)) = self.failed.get(&link.id) {
                if at_generation == generation && at_objects == self.objects_epoch {
                    continue;
                }
            }
            let began = std::time::Instant::now();
            match self.attach(link, address) {
                Ok(probe) => {
                    log::debug(|| {
                        format!(
                            "attached link {} (prog {}) at {address:#x} in {} µs",
                            link.id,
                            link.prog_id,
                            began.elapsed().as_micros()
                        )
                    });
                    self.failed.remove(&link.id);
                    self.attached.insert(link.id, probe);
                    self.enable_semaphore(link);
                }
                Err(message) => {
                    log::warn(&format!(
                        "cannot attach probe {} on {}+{:#x}: {message}",
                        link.id, link.target_path, link.file_offset
                    ));
                    self.failed.insert(link.id, (generation, self.objects_epoch));
                }
            }
        }
        let stale: Vec<u32> = self.attached.keys().copied().filter(|id| !desired.contains(id)).collect();
        for id in stale {
            if let Some(probe) = self.attached.remove(&id) {
                log::debug(|| format!("detaching link {id}"));
                self.disable_semaphore(id);
                // After a dlclose the address may hold nothing, or another
                // file's code: restoring "original" bytes there would corrupt
                // it. Such probes are switched off and kept instead.
                if !self.maps_file_at(probe.address, probe.file) {
                    probes::switch_off(&probe);
                    self.retained.push(probe);
                    continue;
                }
                if let Err((probe, e)) = probes::detach(probe) {
                    log::warn(&format!("cannot detach probe {id}: {e}"));
                    self.retained.push(probe);
                }
            }
        }
        // Programs no attached probe uses any more are dropped (retained
        // probes and live samplers hold their own reference).
        let in_use: HashSet<u32> = self.attached.values().map(|p| p.program_id).collect();
        self.programs.retain(|id, _| in_use.contains(id) || self.perf_links.iter().any(|l| l.prog_id == *id));
        self.failed.retain(|id, _| links.iter().any(|l| l.id == *id));
    }

    /// Executable mappings of the file `(dev, ino)`, as either
    /// `/proc/self/maps` or `stat()` of the mapped path names it.
    fn mappings_of(&self, file: (u64, u64)) -> impl Iterator<Item = &rewriter::maps::Mapping> {
        self.mappings.iter().zip(&self.stat_identity).filter_map(move |(m, stat)| {
            (m.executable && ((m.dev, m.inode) == file || *stat == Some(file))).then_some(m)
        })
    }

    /// Whether `address` is in an executable mapping of `file` (dev, ino).
    fn maps_file_at(&self, address: usize, file: (u64, u64)) -> bool {
        self.mappings_of(file).any(|m| address >= m.start && address < m.end)
    }

    /// Where a link's USDT semaphore (`ref_ctr_offset`, a file offset) lies
    /// in this process: a writable private mapping of the probed file (the
    /// `.probes` section is data), found by identity or, for files whose
    /// mappings `/proc/self/maps` names differently (overlayfs), by the
    /// path of the file's executable mapping.
    fn semaphore_of(&self, link: &LinkRecord) -> Option<usize> {
        let file = (link.dev, link.inode);
        let off = link.ref_ctr_offset;
        if off == 0 {
            return None;
        }
        let paths: Vec<&std::path::Path> = self.mappings_of(file).map(|m| m.path.as_path()).collect();
        self.mappings
            .iter()
            .filter(|m| m.writable && !m.shared && ((m.dev, m.inode) == file || paths.contains(&m.path.as_path())))
            .find(|m| off >= m.offset && off + 2 <= m.offset + (m.end - m.start) as u64)
            .map(|m| m.start + (off - m.offset) as usize)
    }

    /// The kernel's uprobe `ref_ctr_offset`: while a probe on a USDT site
    /// is attached, its semaphore counts it, so code guarded by
    /// `PROVIDER_NAME_ENABLED()` runs. One increment per attached link.
    fn enable_semaphore(&mut self, link: &LinkRecord) {
        let Some(address) = self.semaphore_of(link) else {
            if link.ref_ctr_offset != 0 {
                log::warn(&format!(
                    "USDT semaphore of probe {} ({}+{:#x}) is not mapped here: its guarded code will not run",
                    link.id, link.target_path, link.ref_ctr_offset
                ));
            }
            return;
        };
        // SAFETY: `address` lies inside a writable private mapping of the
        // probed file (just read from /proc/self/maps); the semaphore is a
        // naturally aligned u16 the app only reads.
        let counter = unsafe { &*(address as *const std::sync::atomic::AtomicU16) };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.semaphores.insert(link.id, (address, (link.dev, link.inode)));
    }

    /// Undo [`Agent::enable_semaphore`] for link `id`, if the file is still
    /// mapped there (after a `dlclose` the address may be anything).
    fn disable_semaphore(&mut self, id: u32) {
        let Some((address, file)) = self.semaphores.remove(&id) else { return };
        let paths: Vec<&std::path::Path> = self.mappings_of(file).map(|m| m.path.as_path()).collect();
        let still_mapped = self.mappings.iter().any(|m| {
            m.writable
                && address >= m.start
                && address + 2 <= m.end
                && ((m.dev, m.inode) == file || paths.contains(&m.path.as_path()))
        });
        if still_mapped {
            // SAFETY: as in `enable_semaphore`; the mapping is still there.
            let counter = unsafe { &*(address as *const std::sync::atomic::AtomicU16) };
            let _ = counter.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }

    /// Where the attachment's target lies in this process, if its file is mapped.
    fn address_of(&self, link: &LinkRecord) -> Option<usize> {
        self.mappings_of((link.dev, link.inode))
            .find(|m| link.file_offset >= m.offset && link.file_offset < m.offset + (m.end - m.start) as u64)
            .map(|m| m.start + (link.file_offset - m.offset) as usize)
    }

    fn attach(&mut self, link: &LinkRecord, address: usize) -> Result<ActiveProbe, String> {
        let began = std::time::Instant::now();
        let program = self.program(link.prog_id)?;
        log::debug(|| format!("program {} ready in {} µs", link.prog_id, began.elapsed().as_micros()));
        let kind = if link.kind == LinkKind::Uretprobe { ProbeKind::Return } else { ProbeKind::Entry };
        probes::attach(kind, address, (link.dev, link.inode), link.id, link.cookie, link.pid, program).map_err(|e| e.to_string())
    }

    /// Detach everything and attach nothing more until [`Agent::resume`].
    /// The detached probes' code and data are kept forever (a stopped
    /// thread may still be inside them). Returns how many were removed.
    pub fn suspend(&mut self) -> usize {
        self.suspended = true;
        let mut removed = 0;
        for id in self.semaphores.keys().copied().collect::<Vec<_>>() {
            self.disable_semaphore(id);
        }
        for (id, probe) in self.attached.drain() {
            match rewriter::detach(probe.probe_id()) {
                Ok(()) => removed += 1,
                Err(e) => log::warn(&format!("cannot detach probe {id}: {e}")),
            }
            self.retained.push(probe);
        }
        self.programs.clear();
        self.samplers.set(Vec::new());
        removed
    }

    /// In a forked child: live patching needs its own one-time set-up
    /// (expedited `membarrier` registration is per process).
    pub fn after_fork(&mut self) {
        self.patching_prepared = false;
        self.samplers.after_fork();
    }

    pub fn resume(&mut self) {
        self.suspended = false;
        self.failed.clear();
    }
}

/// For each mapping, the identity `stat()` of its path gives when that
/// differs from the mapping's own (one `stat` per distinct executable file,
/// done only when the set of loaded objects changed).
fn stat_identities(mappings: &[rewriter::maps::Mapping]) -> Vec<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let mut seen: HashMap<&std::path::Path, Option<(u64, u64)>> = HashMap::new();
    mappings
        .iter()
        .map(|m| {
            if !m.executable || !m.is_file() {
                return None;
            }
            let stat = *seen.entry(m.path.as_path()).or_insert_with(|| {
                std::fs::metadata(&m.path).ok().map(|md| (md.dev(), md.ino()))
            });
            stat.filter(|s| *s != (m.dev, m.inode))
        })
        .collect()
}

/// A number that changes whenever a shared object is loaded or unloaded
/// (`dlpi_adds + dlpi_subs` from `dl_iterate_phdr`).
fn loaded_objects_epoch() -> u64 {
    unsafe extern "C" fn first(info: *mut libc::dl_phdr_info, _size: usize, data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: the loader passes a valid info; `data` is our u64.
        unsafe { *(data as *mut u64) = (*info).dlpi_adds.wrapping_add((*info).dlpi_subs) };
        1
    }
    let mut epoch = 0u64;
    // SAFETY: the callback only reads the info and writes our local.
    unsafe { libc::dl_iterate_phdr(Some(first), &mut epoch as *mut u64 as *mut libc::c_void) };
    epoch
}

/// Do ahead of the first attach the slow one-time set-up of live patching
/// (`rewriter::prepare`: signal handlers and the expedited `membarrier`
/// registration, ~8 ms per command as the kernel waits for an RCU grace
/// period). Called as soon as a link targets this process — typically a
/// loader's still-disabled perf event — so the cost is not part of the
/// enable's latency. Not done in processes no link targets: a thread inside
/// that system call delays the process's exit by as much.
fn prepare_patching() {
    if let Err(e) = rewriter::prepare() {
        log::warn(&format!("live patching set-up failed (the first attach will retry): {e}"));
    }
}

/// The watcher thread's body: reconcile, sleep on the generation futex, repeat.
///
/// While the registry holds no uprobe link at all the thread sleeps on the
/// futex without a timeout: nothing but a registry change can give it work,
/// so an untraced process sees no periodic wake-ups.
pub fn run() {
    // Off the application's start-up path: say what this process is, for
    // `userbpf list` (again in a forked child, which is a new owner).
    if let Some(agent) = lock_state().as_ref() {
        if let Err(e) = agent.registry.set_role("agent") {
            log::debug(|| format!("cannot record the agent role in the registry: {e}"));
        }
    }
    // What this agent last told the registry (see below).
    let mut published = String::new();
    loop {
        let (registry, seen_generation, idle) = {
            let mut guard = lock_state();
            let Some(agent) = guard.as_mut() else { return };
            let seen_generation = agent.registry.generation();
            agent.reconcile();
            // Say which registry generation the probes now reflect, so
            // `userbpf attach` can wait until they are live (only when it
            // changes: one small write, off the application's threads).
            let mut links: Vec<u32> = agent.attached.keys().copied().chain(agent.samplers.link_ids().iter().copied()).collect();
            links.sort_unstable();
            let mut hits: Vec<(u32, u64)> = agent.attached.iter().map(|(id, p)| (*id, p.hits())).collect();
            hits.extend(agent.samplers.hits());
            hits.sort_unstable();
            let status = shm_maps::AgentStatus { generation: seen_generation, probes: agent.attached_count(), links, hits }.line();
            if status != published {
                match agent.registry.set_status("agent", &status) {
                    Ok(()) => published = status,
                    Err(e) => log::debug(|| format!("cannot record the agent's status in the registry: {e}")),
                }
            }
            // Live samplers tick too: threads started since get their timers.
            let idle = !agent.saw_links && agent.attached.is_empty() && !agent.samplers.active() && agent.perf_links.is_empty();
            if !agent.attached.is_empty() || agent.samplers.active() {
                runtime::helpers::task::refresh_slow_caches();
                // A loader may have filled PERF_EVENT_ARRAY / PROG_ARRAY slots since.
                runtime::maps::refresh_bound_maps();
            }
            (agent.registry.clone(), seen_generation, idle)
        };
        registry.wait_generation_change(seen_generation, if idle { None } else { Some(TICK) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A mapping of `path` whose (dev, inode) is *not* what `stat()` says,
    /// as `/proc/self/maps` reports files on some overlayfs setups.
    fn mapping_with_foreign_identity(path: &std::path::Path) -> rewriter::maps::Mapping {
        rewriter::maps::Mapping {
            start: 0x10000,
            end: 0x20000,
            readable: true,
            writable: false,
            executable: true,
            shared: false,
            offset: 0x1000,
            dev: 0xdead,
            inode: 0xbeef,
            path: path.to_path_buf(),
        }
    }

    #[test]
    fn files_match_by_the_identity_stat_reports_too() {
        let exe = std::env::current_exe().unwrap();
        let meta = std::fs::metadata(&exe).unwrap();
        let mappings = vec![mapping_with_foreign_identity(&exe)];
        let mut agent = Agent::new(Registry::open(&std::env::temp_dir().join(format!(
            "userbpf-agent-unit-{}",
            std::process::id()
        )))
        .unwrap());
        agent.stat_identity = stat_identities(&mappings);
        agent.mappings = mappings;
        assert_eq!(agent.stat_identity, vec![Some((meta.dev(), meta.ino()))]);
        let link = LinkRecord { dev: meta.dev(), inode: meta.ino(), file_offset: 0x1010, ..LinkRecord::default() };
        assert_eq!(agent.address_of(&link), Some(0x10010));
        // The identity /proc/self/maps shows still matches as well.
        let link = LinkRecord { dev: 0xdead, inode: 0xbeef, file_offset: 0x1010, ..LinkRecord::default() };
        assert_eq!(agent.address_of(&link), Some(0x10010));
        assert!(agent.maps_file_at(0x10010, (meta.dev(), meta.ino())));
        // Outside the mapped range, or another file: no address.
        let link = LinkRecord { dev: meta.dev(), inode: meta.ino(), file_offset: 0x20000, ..LinkRecord::default() };
        assert_eq!(agent.address_of(&link), None);
        let link = LinkRecord { dev: 1, inode: 2, file_offset: 0x1010, ..LinkRecord::default() };
        assert_eq!(agent.address_of(&link), None);
        let _ = std::fs::remove_dir_all(agent.registry.dir());
    }
}
