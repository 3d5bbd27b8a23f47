//! Probe sites and the attach/detach registry.
//!
//! A *site* is one patched address. It is created on the first attach to an
//! address, patched while it has at least one handler and unpatched when the
//! last one is detached. Sites and their trampolines are immutable once
//! created and are kept for the life of the process, so a thread can never
//! be inside freed trampoline code; re-attaching to the same address reuses
//! them (after checking the original bytes are still those the site copied,
//! so a library unloaded and replaced by another gets a fresh site). Memory
//! is therefore bounded by the number of distinct probed addresses (one page
//! each).
//!
//! A site's handlers are an immutable list published through an atomic
//! pointer. attach/detach build a new list, swap it in, and free the old one
//! after a grace period (`thread_state::synchronize`), so once `detach`
//! returns no thread runs, or will run, the detached handler.
//!
//! Patching follows the kernel's text-poke-with-breakpoint sequence; see
//! `patch` and `unpatch`.

use crate::elf::FunctionSymbol;
use crate::error::{Error, Result};
use crate::memory;
use crate::regs::PtRegs;
use crate::relocate::{self, Displaced, JMP_LEN};
use crate::signals::{self, Interior, TrapAction};
use crate::thread_state::{self, InProbe};
use crate::trampoline;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A probe handler: receives the kernel-layout registers and the `data`
/// pointer given at attach time.
pub type ProbeHandler = unsafe extern "C" fn(regs: *mut PtRegs, data: *mut c_void);

/// Handle of an attached probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeId(pub u64);

/// How a site runs its handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// `jmp` to a trampoline (fast path).
    Trampoline,
    /// `int3` and a SIGTRAP handler, because the prologue could not be
    /// relocated (the reason is given) or the address is not a function entry.
    Breakpoint { reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Entry,
    Return,
}

#[derive(Clone, Copy)]
pub(crate) struct Handler {
    id: u64,
    function: ProbeHandler,
    data: *mut c_void,
}

/// Immutable once published.
#[derive(Clone, Default)]
pub(crate) struct HandlerList {
    pub(crate) on_entry: Vec<Handler>,
    pub(crate) on_return: Vec<Handler>,
}

impl HandlerList {
    pub(crate) fn run(handlers: &[Handler], regs: *mut PtRegs) {
        for h in handlers {
            // SAFETY: the attacher promised `function` may be called with
            // `data` from any thread until detach returns (grace period).
            unsafe { (h.function)(regs, h.data) };
        }
    }
    fn is_empty(&self) -> bool {
        self.on_entry.is_empty() && self.on_return.is_empty()
    }
}

pub(crate) struct Site {
    function_address: usize,
    /// Where the patch goes (after `endbr64`, if any).
    patch_address: usize,
    mechanism: Mechanism,
    /// The bytes the patch overwrites.
    original: Vec<u8>,
    /// The patch: `jmp trampoline`, or `int3`.
    patch: Vec<u8>,
    at_function_entry: bool,
    trampoline_entry: usize,
    original_copy: usize,
    /// Where a function entered through the trampoline's `call` returns to
    /// when its return is hijacked (0 for breakpoint sites).
    return_continuation: usize,
    /// For a breakpoint site whose first instruction is `call target`.
    displaced_call: Option<(usize, usize)>,
    interior: Interior,
    handlers: AtomicPtr<HandlerList>,
    trap_action: AtomicU8,
    patched: std::sync::atomic::AtomicBool,
}

// SAFETY: the raw `data` pointers inside handler lists are only passed back
// to the handlers, whose thread-safety the attacher vouched for; everything
// else is immutable or atomic.
unsafe impl Sync for Site {}
// SAFETY: as above.
unsafe impl Send for Site {}

impl Site {
    pub(crate) fn function_address(&self) -> usize {
        self.function_address
    }
    pub(crate) fn trampoline_entry(&self) -> usize {
        self.trampoline_entry
    }
    pub(crate) fn original_copy(&self) -> usize {
        self.original_copy
    }
    pub(crate) fn return_continuation(&self) -> usize {
        self.return_continuation
    }
    pub(crate) fn displaced_call(&self) -> Option<(usize, usize)> {
        self.displaced_call
    }
    pub(crate) fn trap_action(&self) -> TrapAction {
        TrapAction::from_u8(self.trap_action.load(Ordering::Acquire))
    }
    fn set_trap_action(&self, action: TrapAction) {
        self.trap_action.store(action as u8, Ordering::Release);
    }
    /// The current handler list (valid while the caller is in a probe).
    pub(crate) fn handlers(&self) -> &HandlerList {
        // SAFETY: lists are freed only after a grace period that waits for
        // every thread in a probe, and callers are in a probe.
        unsafe { &*self.handlers.load(Ordering::Acquire) }
    }
}

/// Entry point of the breakpoint path: runs the entry handlers and, for
/// uretprobes, hijacks the return address in place (overwrites it with
/// `return_trampoline`).
///
/// # Safety
/// `regs` must be valid; `site` must be a live site.
pub(crate) unsafe extern "C" fn dispatch_entry(regs: *mut PtRegs, site: *const Site) {
    // SAFETY: forwarded contract.
    unsafe { dispatch(regs, site, ReturnHijack::InPlace) };
}

/// Entry point called by every trampoline. Returns 1 when the trampoline
/// must take the return through a `call` (see `trampoline.rs`): the real
/// return address is then on the shadow stack and the trampoline drops it
/// and calls the function; 0 to continue into the function normally.
///
/// # Safety
/// `regs` must be valid; `site` must be a live site.
pub(crate) unsafe extern "C" fn dispatch_trampoline_entry(regs: *mut PtRegs, site: *const Site) -> usize {
    // SAFETY: forwarded contract.
    unsafe { dispatch(regs, site, ReturnHijack::ByCall) as usize }
}

/// How a uretprobe takes over the return of the probed call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReturnHijack {
    /// Overwrite the return address with `return_trampoline` (breakpoint
    /// sites: the function's `ret` is then mispredicted).
    InPlace,
    /// The entry trampoline replaces the return address by `call`ing the
    /// function, whose `ret` lands, predicted, in the site's continuation.
    ByCall,
}

/// # Safety
/// `regs` must be valid; `site` must be a live site.
#[inline(always)]
unsafe fn dispatch(regs: *mut PtRegs, site: *const Site, how: ReturnHijack) -> bool {
    let Some(in_probe) = InProbe::enter() else { return false };
    // SAFETY: sites are never freed.
    let site = unsafe { &*site };
    let list = site.handlers();
    HandlerList::run(&list.on_entry, regs);
    let hijacked = !list.on_return.is_empty() && hijack_return(&in_probe, site, regs, how);
    drop(in_probe);
    hijacked
}

/// Out of line: keeps the dispatcher's fast path (uprobes only) small.
#[inline(never)]
fn hijack_return(in_probe: &InProbe, site: &'static Site, regs: *mut PtRegs, how: ReturnHijack) -> bool {
    // SAFETY: regs is valid (the dispatcher's contract).
    crate::uretprobe::hijack_return(in_probe.slot(), site, unsafe { &*regs }, how)
}

struct Probe {
    site: &'static Site,
    kind: Kind,
}

pub(crate) struct Registry {
    sites: HashMap<usize, &'static Site>,
    probes: HashMap<u64, Probe>,
    next_id: u64,
    symbols: HashMap<(u64, u64), Arc<Vec<FunctionSymbol>>>,
    pub(crate) unwinder_hooks: HashMap<usize, ProbeId>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

thread_local! {
    /// The registry lock, held by the forking thread across `fork`.
    static HELD_ACROSS_FORK: std::cell::RefCell<Option<MutexGuard<'static, Option<Registry>>>> =
        const { std::cell::RefCell::new(None) };
}

/// `pthread_atfork` prepare handler: a fork never happens in the middle of
/// an attach or detach of another thread (the child would inherit a locked
/// registry and half-done patching state).
extern "C" fn lock_before_fork() {
    let guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    HELD_ACROSS_FORK.with(|held| *held.borrow_mut() = Some(guard));
}

/// `pthread_atfork` parent and child handler.
extern "C" fn unlock_after_fork() {
    HELD_ACROSS_FORK.with(|held| drop(held.borrow_mut().take()));
}

pub(crate) fn registry() -> Result<MutexGuard<'static, Option<Registry>>> {
    if thread_state::in_probe() {
        return Err(Error::Unsupported {
            feature: "attach or detach from inside a probe handler",
            reason: "the grace period would wait for this very thread".into(),
        });
    }
    static FORK_HANDLERS: std::sync::Once = std::sync::Once::new();
    FORK_HANDLERS.call_once(|| {
        // SAFETY: registering extern "C" handlers of this module.
        unsafe { libc::pthread_atfork(Some(lock_before_fork), Some(unlock_after_fork), Some(unlock_after_fork)) };
    });
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(Registry {
            sites: HashMap::new(),
            probes: HashMap::new(),
            next_id: 1,
            symbols: HashMap::new(),
            unwinder_hooks: HashMap::new(),
        });
    }
    Ok(guard)
}

impl Registry {
    pub(crate) fn prepare(&mut self) -> Result<()> {
        self.init()
    }

    fn init(&mut self) -> Result<()> {
        signals::install()?;
        // Per process: after a fork the child registers again, and readers
        // fence themselves if it cannot.
        let barriers = memory::barriers();
        thread_state::init(!barriers.expedited);
        Ok(())
    }

    /// Function symbols of the file mapped at `mapping` (cached by inode).
    pub(crate) fn symbols_of(&mut self, mapping: &crate::maps::Mapping) -> Option<Arc<Vec<FunctionSymbol>>> {
        if !mapping.is_file() {
            return None;
        }
        if let Some(s) = self.symbols.get(&(mapping.dev, mapping.inode)) {
            return Some(s.clone());
        }
        // The path may name another file now (replaced on disk): check.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&mapping.path).ok()?;
        if (meta.dev(), meta.ino()) != (mapping.dev, mapping.inode) {
            return None;
        }
        let symbols = Arc::new(crate::elf::list_functions(&mapping.path).ok()?);
        self.symbols.insert((mapping.dev, mapping.inode), symbols.clone());
        Some(symbols)
    }

    pub(crate) fn attach(&mut self, address: usize, kind: Kind, function: ProbeHandler, data: *mut c_void) -> Result<ProbeId> {
        self.init()?;
        let site = self.site_for(address)?;
        if kind == Kind::Return && !site.at_function_entry {
            return Err(Error::Unsupported {
                feature: "uretprobe at an address that is not a function entry",
                reason: format!("{address:#x} is not the first instruction of a known function symbol"),
            });
        }
        if kind == Kind::Return {
            crate::uretprobe::ensure_unwinder_hooks(self)?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let handler = Handler { id, function, data };
        let old = site.handlers();
        let mut new = old.clone();
        match kind {
            Kind::Entry => new.on_entry.push(handler),
            Kind::Return => new.on_return.push(handler),
        }
        self.publish(site, new);
        if !site.patched.load(Ordering::Relaxed) {
            if let Err(e) = patch(site) {
                let mut reverted = site.handlers().clone();
                reverted.on_entry.retain(|h| h.id != id);
                reverted.on_return.retain(|h| h.id != id);
                self.publish(site, reverted);
                return Err(e);
            }
        }
        self.probes.insert(id, Probe { site, kind });
        Ok(ProbeId(id))
    }

    pub(crate) fn detach(&mut self, id: ProbeId) -> Result<()> {
        let probe = self.probes.remove(&id.0).ok_or(Error::UnknownProbe(id.0))?;
        let site = probe.site;
        let mut new = site.handlers().clone();
        match probe.kind {
            Kind::Entry => new.on_entry.retain(|h| h.id != id.0),
            Kind::Return => new.on_return.retain(|h| h.id != id.0),
        }
        let now_empty = new.is_empty();
        self.publish(site, new);
        if now_empty && site.patched.load(Ordering::Relaxed) {
            unpatch(site)?;
        }
        Ok(())
    }

    pub(crate) fn mechanism(&self, id: ProbeId) -> Result<Mechanism> {
        Ok(self.probes.get(&id.0).ok_or(Error::UnknownProbe(id.0))?.site.mechanism.clone())
    }

    /// Swaps in `list`, waits for the grace period, frees the old list.
    fn publish(&mut self, site: &'static Site, list: HandlerList) {
        let new = Box::into_raw(Box::new(list));
        let old = site.handlers.swap(new, Ordering::AcqRel);
        thread_state::synchronize();
        // SAFETY: `old` came from Box::into_raw and, after the grace period,
        // no thread holds a reference to it.
        drop(unsafe { Box::from_raw(old) });
    }

    fn site_for(&mut self, address: usize) -> Result<&'static Site> {
        if let Some(&site) = self.sites.get(&address) {
            let current = memory::read_text(site.patch_address, site.original.len())?;
            let expected = if site.patched.load(Ordering::Relaxed) { &site.patch } else { &site.original };
            if &current == expected {
                return Ok(site);
            }
            // Different code at this address now (library replaced).
            self.sites.remove(&address);
        }
        let site = self.create_site(address)?;
        self.sites.insert(address, site);
        Ok(site)
    }

    fn create_site(&mut self, address: usize) -> Result<&'static Site> {
        let mapping = crate::maps::mapping_of(address)?.ok_or(Error::AddressNotExecutable(address))?;
        if !mapping.executable {
            return Err(Error::AddressNotExecutable(address));
        }
        if mapping.shared {
            return Err(Error::Unsupported {
                feature: "probing code in a shared (MAP_SHARED) mapping",
                reason: format!("patching {address:#x} would change {} for every process", mapping.path.display()),
            });
        }
        let symbol = self.symbols_of(&mapping).and_then(|symbols| {
            let offset = mapping.file_offset_of(address);
            symbols.iter().find(|f| f.file_offset == offset).cloned()
        });
        let at_function_entry = symbol.is_some();
        let function_end = symbol.as_ref().filter(|s| s.size > 0).map(|s| address + s.size as usize);
        let head = memory::read_text(address, 64)?;
        let patch_address = if relocate::starts_with_endbr64(&head) { address + 4 } else { address };
        let code = &head[patch_address - address..];

        let trampoline_attempt = if !at_function_entry {
            Err("the address is not the entry of a function symbol (only entries get trampolines)".to_string())
        } else if function_end.is_none() {
            Err("the function symbol has no size, so branches into the patched bytes cannot be ruled out".to_string())
        } else {
            relocate::displace(patch_address, code, JMP_LEN, function_end).and_then(|d| {
                let end = function_end.unwrap_or(patch_address);
                let body = memory::read_text(address, end - address).map_err(|e| e.to_string())?;
                relocate::check_no_branch_into(address, &body, patch_address, d.length)?;
                Ok(d)
            })
        };
        match trampoline_attempt {
            Ok(displaced) => match self.build_trampoline_site(address, patch_address, &displaced) {
                Ok(site) => Ok(site),
                Err(Error::Relocation { reason, .. }) => self.build_breakpoint_site(address, patch_address, code, at_function_entry, reason),
                Err(e) => Err(e),
            },
            Err(reason) => self.build_breakpoint_site(address, patch_address, code, at_function_entry, reason),
        }
    }

    fn build_trampoline_site(&mut self, address: usize, patch_address: usize, displaced: &Displaced) -> Result<&'static Site> {
        let page = memory::alloc_page_near(patch_address)?;
        let mut site = Box::new(Site {
            function_address: address,
            patch_address,
            mechanism: Mechanism::Trampoline,
            original: memory::read_text(patch_address, JMP_LEN)?,
            patch: Vec::new(),
            at_function_entry: true,
            trampoline_entry: page,
            original_copy: 0,
            return_continuation: 0,
            displaced_call: None,
            interior: Interior { start: patch_address, length: displaced.length, boundaries: Vec::new() },
            handlers: AtomicPtr::new(Box::into_raw(Box::default())),
            trap_action: AtomicU8::new(TrapAction::Retired as u8),
            patched: false.into(),
        });
        let site_address = &*site as *const Site as usize;
        let built = trampoline::build_entry(
            page,
            address,
            site_address,
            dispatch_trampoline_entry as *const () as usize,
            crate::uretprobe::balanced_return_trampoline as *const () as usize,
            displaced,
        )
            .map_err(|reason| Error::Relocation { address, reason });
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: unmapping the unused page we mapped.
                unsafe { libc::munmap(page as *mut c_void, memory::PAGE_SIZE) };
                return Err(e);
            }
        };
        let jump = relocate::jmp_rel32(patch_address, page).ok_or(Error::NoNearMemory(patch_address))?;
        // SAFETY: `page` is fresh from alloc_page_near.
        unsafe { memory::seal_code_page(page, &built.code)? };
        site.patch = jump.to_vec();
        site.original_copy = built.original_copy;
        site.return_continuation = built.return_continuation;
        site.interior.boundaries = built.boundaries;
        Ok(Box::leak(site))
    }

    fn build_breakpoint_site(
        &mut self,
        address: usize,
        patch_address: usize,
        code: &[u8],
        at_function_entry: bool,
        reason: String,
    ) -> Result<&'static Site> {
        let first = relocate::first_instruction(patch_address, code).map_err(|r| Error::Relocation { address, reason: r })?;
        let mut displaced_call = None;
        let mut original_copy = 0;
        if let Some(target) = relocate::direct_call_target(&first) {
            displaced_call = Some((target, patch_address + first.length));
        } else {
            let page = memory::alloc_page_near(patch_address)?;
            let relocated = relocate::relocate(&first, page).map_err(|r| Error::Relocation { address, reason: r })?;
            // SAFETY: `page` is fresh from alloc_page_near.
            unsafe { memory::seal_code_page(page, &relocated.code)? };
            original_copy = page;
        }
        let site = Box::new(Site {
            function_address: address,
            patch_address,
            mechanism: Mechanism::Breakpoint { reason },
            original: memory::read_text(patch_address, 1)?,
            patch: vec![0xcc],
            at_function_entry,
            trampoline_entry: 0,
            original_copy,
            return_continuation: 0,
            displaced_call,
            interior: Interior { start: patch_address, length: 1, boundaries: Vec::new() },
            handlers: AtomicPtr::new(Box::into_raw(Box::default())),
            trap_action: AtomicU8::new(TrapAction::Retired as u8),
            patched: false.into(),
        });
        Ok(Box::leak(site))
    }
}

/// Installs the site's patch.
///
/// Trampoline sites use the text-poke-with-breakpoint sequence: `int3` on
/// the first byte (threads reaching it are sent to the trampoline by the
/// SIGTRAP handler), sync all cores; if several instructions are displaced,
/// a rendezvous moves any thread stopped between them into their relocated
/// copy (after it, no thread is inside and none can enter except through the
/// breakpoint); write bytes 1..5 of the jump, sync; write byte 0, sync. At
/// every moment each byte sequence a thread can start executing is either
/// the original instructions, the `int3`, or the whole jump.
fn patch(site: &'static Site) -> Result<()> {
    let at = site.patch_address;
    signals::register_breakpoint(at, site)?;
    match site.mechanism {
        Mechanism::Breakpoint { .. } => {
            site.set_trap_action(TrapAction::RunHandlers);
            memory::write_text(at, &[0xcc])?;
            memory::sync_all_cores()?;
        }
        Mechanism::Trampoline => {
            site.set_trap_action(TrapAction::ToTrampoline);
            memory::write_text(at, &[0xcc])?;
            memory::sync_all_cores()?;
            if site.interior.boundaries.len() > 1 {
                if let Err(e) = signals::rendezvous(Some(&site.interior)) {
                    memory::write_text(at, &site.original[..1])?;
                    memory::sync_all_cores()?;
                    site.set_trap_action(TrapAction::Retired);
                    return Err(e);
                }
            }
            memory::write_text(at + 1, &site.patch[1..])?;
            memory::sync_all_cores()?;
            memory::write_text(at, &site.patch[..1])?;
            memory::sync_all_cores()?;
        }
    }
    site.patched.store(true, Ordering::Relaxed);
    Ok(())
}

/// Restores the original bytes: the same sequence in reverse (the jump is
/// one instruction, so no thread can be inside it). Threads that trapped on
/// the breakpoint meanwhile run the relocated original instructions.
fn unpatch(site: &'static Site) -> Result<()> {
    let at = site.patch_address;
    match site.mechanism {
        Mechanism::Breakpoint { .. } => {
            memory::write_text(at, &site.original)?;
            memory::sync_all_cores()?;
            site.set_trap_action(TrapAction::Retired);
        }
        Mechanism::Trampoline => {
            site.set_trap_action(TrapAction::ToOriginal);
            memory::write_text(at, &[0xcc])?;
            memory::sync_all_cores()?;
            memory::write_text(at + 1, &site.original[1..])?;
            memory::sync_all_cores()?;
            memory::write_text(at, &site.original[..1])?;
            memory::sync_all_cores()?;
        }
    }
    site.patched.store(false, Ordering::Relaxed);
    Ok(())
}
