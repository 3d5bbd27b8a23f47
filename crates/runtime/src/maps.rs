//! Process-local map handles. A program's `lddw` map reference becomes the
//! address of a [`MapHandle`] (an `shm_maps::Map`: the map file mapped into
//! this process), which map helpers receive as `r1`. Handles are shared by
//! every program of the process that uses the same registry map, through a
//! table of weak references, so a map is mapped once however many programs
//! use it. (PROG_ARRAY maps get a richer handle, see [`crate::tail`].)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use shm_maps::{map_type, Map, Registry};

/// The process-local handle of a registry map.
pub type MapHandle = Map;

/// Extension used while resolving `lddw` pseudo sources.
pub(crate) trait DirectValue {
    /// Address of byte `offset` of the value at index 0 (`BPF_PSEUDO_MAP_VALUE`:
    /// global data in an array map).
    fn direct_value_address(&self, offset: u32) -> Result<u64, String>;
}

impl DirectValue for Map {
    fn direct_value_address(&self, offset: u32) -> Result<u64, String> {
        if self.map_type() != map_type::ARRAY {
            return Err(format!(
                "direct value access needs an ARRAY map; map {} is {}",
                self.id(),
                map_type::name(self.map_type())
            ));
        }
        if offset >= self.value_size() {
            return Err(format!("value offset {offset} beyond map {}'s value size {}", self.id(), self.value_size()));
        }
        let value = self.array_value_ptr(0).ok_or_else(|| format!("map {} has no element 0", self.id()))?;
        Ok(value as u64 + offset as u64)
    }
}

static HANDLES: Mutex<Option<HashMap<u32, Weak<MapHandle>>>> = Mutex::new(None);

/// The process-local handle of registry map `id`, opening it if no live
/// program of this process has it open yet.
pub fn bind(registry: &Registry, id: u32) -> Result<Arc<MapHandle>, String> {
    let mut table = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
    let table = table.get_or_insert_with(HashMap::new);
    if let Some(handle) = table.get(&id).and_then(Weak::upgrade) {
        return Ok(handle);
    }
    let map = registry.open_map(id).map_err(|e| format!("map {id}: {e}"))?;
    if map.map_type() == map_type::PERF_EVENT_ARRAY {
        map.refresh_perf_rings();
    }
    let handle = Arc::new(map);
    table.retain(|_, weak| weak.strong_count() > 0);
    table.insert(id, Arc::downgrade(&handle));
    Ok(handle)
}

/// Bring this process's view of the bound maps up to date with what the
/// loaders stored since, off the hot path: open and cache every perf ring
/// the PERF_EVENT_ARRAY maps reference (so `bpf_perf_event_output` never
/// opens one inside a probe, where `open`/`mmap`/allocation in a probed
/// `malloc` could deadlock), and load the programs PROG_ARRAY slots name
/// (tail-call targets). Call it whenever the registry may have changed (the
/// agent's watcher does, every wake).
pub fn refresh_bound_maps() {
    let live: Vec<Arc<MapHandle>> = {
        let table = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
        table.iter().flat_map(|t| t.values()).filter_map(Weak::upgrade).collect()
    };
    for map in live.iter().filter(|m| m.map_type() == map_type::PERF_EVENT_ARRAY) {
        map.refresh_perf_rings();
    }
    drop(live);
    crate::tail::refresh_all();
}
