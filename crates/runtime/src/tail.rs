//! Tail calls: what a PROG_ARRAY map is to a program in this process.
//!
//! The shared PROG_ARRAY holds registry *program ids* (the syscall server
//! translates the loader's prog fds). A program's `lddw` reference to a
//! PROG_ARRAY resolves to a [`ProgArray`]: the map plus one
//! `vm::program::TailTarget` pointer per slot, which [`resolve`] (the VM's
//! `TailCallResolver`, on the hot path) reads with a single atomic load.
//! The targets are loaded off the hot path by [`ProgArray::refresh`] — when
//! the array is first bound, and whenever the embedder calls
//! [`crate::maps::refresh_bound_maps`] (the agent's watcher does, every
//! wake) — since the loader may fill slots after the caller was loaded.
//!
//! Targets are kept alive as long as the `ProgArray` lives (a replaced
//! target may still be running on another thread). Programs that tail-call
//! each other through an array they all reference form a reference cycle
//! and stay loaded for the life of the process; acceptable for the handful
//! of programs a tool loads. A JIT'd caller can only enter JIT'd targets
//! (the VM's contract): a target the JIT refused makes that tail call fall
//! through, and the load reports it.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, Weak};

use shm_maps::Map;
use vm::program::TailTarget;

use crate::program::LoadedProgram;

/// A PROG_ARRAY bound in this process.
pub struct ProgArray {
    map: Arc<Map>,
    slots: Box<[AtomicPtr<TailTarget>]>,
    /// Everything `slots` ever pointed to, with the program ids: never
    /// freed while the array lives.
    loaded: Mutex<Vec<Loaded>>,
}

struct Loaded {
    index: u32,
    prog_id: u32,
    /// What the slot points to (owned here, so the pointer stays valid).
    _target: Box<TailTarget>,
    _program: Arc<LoadedProgram>,
}

// SAFETY: TailTarget holds raw pointers to programs kept alive in `loaded`;
// slots are atomics; `loaded` is behind a mutex.
unsafe impl Send for ProgArray {}
unsafe impl Sync for ProgArray {}

static ARRAYS: Mutex<Option<HashMap<u32, Weak<ProgArray>>>> = Mutex::new(None);

/// The process-local view of PROG_ARRAY `map`, created (and filled) on
/// first use.
pub fn bind(map: Arc<Map>) -> Arc<ProgArray> {
    let array = {
        let mut table = ARRAYS.lock().unwrap_or_else(|e| e.into_inner());
        let table = table.get_or_insert_with(HashMap::new);
        if let Some(existing) = table.get(&map.id()).and_then(Weak::upgrade) {
            return existing;
        }
        let slots = (0..map.max_entries()).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect();
        let array = Arc::new(ProgArray { map, slots, loaded: Mutex::new(Vec::new()) });
        table.retain(|_, weak| weak.strong_count() > 0);
        table.insert(array.map.id(), Arc::downgrade(&array));
        array
    };
    // Outside the table lock: loading a target may bind this array again.
    array.refresh();
    array
}

/// Refresh every live PROG_ARRAY of the process.
pub fn refresh_all() {
    let live: Vec<Arc<ProgArray>> = {
        let table = ARRAYS.lock().unwrap_or_else(|e| e.into_inner());
        table.iter().flat_map(|t| t.values()).filter_map(Weak::upgrade).collect()
    };
    live.iter().for_each(|a| a.refresh());
}

impl ProgArray {
    /// Registry id of the underlying map.
    pub fn id(&self) -> u32 {
        self.map.id()
    }

    /// Point every slot at the program the shared map names now (loading
    /// it if needed); empty slots become null. Slow path: file reads, JIT.
    pub fn refresh(&self) {
        let Ok(mut loaded) = self.loaded.try_lock() else {
            return; // a refresh of this array is already running (nested load)
        };
        let registry = self.map.registry();
        for index in 0..self.slots.len() as u32 {
            let mut value = [0u8; 4];
            let prog_id = match self.map.lookup(&index.to_le_bytes(), &mut value) {
                Ok(()) => u32::from_le_bytes(value),
                Err(_) => 0,
            };
            let slot = &self.slots[index as usize];
            if prog_id == 0 {
                slot.store(std::ptr::null_mut(), Ordering::Release);
                continue;
            }
            let current = loaded.iter().rev().find(|l| l.index == index).map(|l| l.prog_id);
            if current == Some(prog_id) && !slot.load(Ordering::Acquire).is_null() {
                continue;
            }
            match LoadedProgram::from_registry(&registry, prog_id) {
                Ok(program) => {
                    let program = Arc::new(program);
                    let target = Box::new(TailTarget {
                        program: program.vm_program(),
                        jit_entry: program.jit_entry().unwrap_or(std::ptr::null()),
                    });
                    slot.store(&*target as *const TailTarget as *mut TailTarget, Ordering::Release);
                    loaded.push(Loaded { index, prog_id, _target: target, _program: program });
                }
                Err(_) => slot.store(std::ptr::null_mut(), Ordering::Release),
            }
        }
    }
}

/// The VM's tail-call resolver: the target in slot `index` of the
/// [`ProgArray`] at `prog_array`, or null (the tail call falls through).
///
/// # Safety
/// `prog_array` is a `ProgArray` address a loaded program's `lddw` was
/// resolved to (kept alive by that program).
pub unsafe extern "C" fn resolve(prog_array: u64, index: u64, _env: *mut c_void) -> *const TailTarget {
    // SAFETY: see the function's contract.
    let array = unsafe { &*(prog_array as *const ProgArray) };
    match array.slots.get(index as usize) {
        Some(slot) => slot.load(Ordering::Acquire),
        None => std::ptr::null(),
    }
}
