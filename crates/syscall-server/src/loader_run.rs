//! Programs the loader runs itself: `BEGIN`/`END` (`BPF_PROG_TEST_RUN` of
//! raw-tracepoint programs) and `interval:`/`profile:` ([`crate::timer`]),
//! through the `runtime` crate shared with the agent (same helpers, same
//! JIT), so output and map updates behave exactly as in a traced app.
//!
//! Runnable programs are built once per registry program and cached until
//! the program is released ([`forget`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Once};

use runtime::program::LoadedProgram;

/// Size of the zeroed context a raw-tracepoint test run receives
/// (`struct bpf_raw_tracepoint_args` with 12 arguments).
pub const RAW_TP_CTX_SIZE: usize = 12 * 8;

static CACHE: Mutex<BTreeMap<u32, Arc<LoadedProgram>>> = Mutex::new(BTreeMap::new());

fn loaded(prog_id: u32) -> Result<Arc<LoadedProgram>, i32> {
    runtime_init();
    if let Some(p) = CACHE.lock().map_err(|_| libc::EIO)?.get(&prog_id) {
        return Ok(p.clone());
    }
    let reg = crate::backend::registry()?;
    let prog = LoadedProgram::from_registry(reg, prog_id).map_err(|e| {
        crate::report::line(&format!(
            "userbpf: cannot run program {prog_id} in the loader: {e}"
        ));
        libc::EINVAL
    })?;
    let prog = Arc::new(prog);
    CACHE
        .lock()
        .map_err(|_| libc::EIO)?
        .insert(prog_id, prog.clone());
    Ok(prog)
}

/// Make program `prog_id` runnable now (bind maps, JIT), so a program the
/// runtime cannot run (e.g. it calls a helper userbpf does not implement
/// yet) fails at `BPF_PROG_LOAD` with a message, not silently in the
/// traced apps. The result is cached for test runs and timers.
pub fn preflight(prog_id: u32) -> Result<(), String> {
    runtime_init();
    let reg =
        crate::backend::registry().map_err(|e| format!("registry unavailable (errno {e})"))?;
    let prog = LoadedProgram::from_registry(reg, prog_id).map_err(|e| e.to_string())?;
    if let Ok(mut c) = CACHE.lock() {
        c.insert(prog_id, Arc::new(prog));
    }
    Ok(())
}

fn runtime_init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(e) = runtime::init_process() {
            crate::report::line(&format!(
                "userbpf: cannot prepare the loader to run programs: {e}"
            ));
        }
    });
}

/// Run registry program `prog_id` once with `r1 = ctx`; returns r0.
///
/// # Safety
/// `ctx` must point to a readable context at least as large as the
/// program type's (verified) context: raw tracepoint args for test runs,
/// `bpf_perf_event_data` for timers.
pub unsafe fn run_program(prog_id: u32, ctx: *mut u8) -> Result<u64, i32> {
    let prog = loaded(prog_id)?;
    // SAFETY: the program passed the verifier for its type at load; the
    // context is the caller's, sized as documented above.
    Ok(unsafe { prog.run_detached(ctx) })
}

/// Drop the runnable copy of a program being released.
pub fn forget(prog_id: u32) {
    if let Ok(mut c) = CACHE.lock() {
        c.remove(&prog_id);
    }
}
