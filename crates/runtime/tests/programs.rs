//! Registry programs run through `LoadedProgram`: maps bound by registry
//! id, JIT and helpers together, with results read back through the
//! syscall view of the shared maps.

use runtime::{LoadedProgram, RunEnv};
use shm_maps::{map_type, Map, MapSpec, ProgRecord, Registry};

/// One test at a time: the runtime caches map handles process-wide by
/// registry map id, and every test's fresh registry numbers its maps from 1,
/// so two tests running at once would share each other's maps.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct TempRegistry {
    dir: std::path::PathBuf,
    registry: Registry,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl TempRegistry {
    fn new(name: &str) -> TempRegistry {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("userbpf-runtime-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let registry = Registry::open(&dir).unwrap();
        TempRegistry { dir, registry, _serial: serial }
    }
}

impl Drop for TempRegistry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn map(registry: &Registry, map_type: u32, key_size: u32, value_size: u32) -> Map {
    registry
        .create_map(&MapSpec { map_type, key_size, value_size, max_entries: 64, name: "m".into(), ..Default::default() })
        .unwrap()
}

fn store(registry: &Registry, text: &str, map_ids: &[u32]) -> u32 {
    let insns = vm::asm::assemble(text).unwrap();
    registry
        .create_prog(&ProgRecord {
            prog_type: 2,
            name: "test".into(),
            insns: insns.iter().flat_map(|i| i.to_u64().to_le_bytes()).collect(),
            map_ids: map_ids.to_vec(),
            ..Default::default()
        })
        .unwrap()
}

fn count_text(m: u32) -> String {
    vm::fixtures::bpftrace_count(m)
}

fn percpu_sum(map: &Map, key: u64) -> u64 {
    let mut out = vec![0u8; map.syscall_value_size()];
    map.lookup(&key.to_le_bytes(), &mut out).unwrap();
    out.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).sum()
}

#[test]
fn count_program_runs_jitted_against_a_shared_percpu_hash() {
    let t = TempRegistry::new("count");
    let m = map(&t.registry, map_type::PERCPU_HASH, 8, 8);
    let id = store(&t.registry, &count_text(m.id()), &[m.id()]);
    let program = LoadedProgram::from_registry(&t.registry, id).unwrap();
    assert!(program.is_jitted(), "JIT refused: {:?}", program.jit_refusal());
    for _ in 0..10 {
        // SAFETY: the program does not touch its context.
        unsafe { program.run_detached(std::ptr::null_mut()) };
    }
    assert_eq!(percpu_sum(&m, 0), 10);
    // A second program on the same map shares the process-local handle.
    let again = LoadedProgram::from_registry(&t.registry, id).unwrap();
    // SAFETY: as above.
    unsafe { again.run_detached(std::ptr::null_mut()) };
    assert_eq!(percpu_sum(&m, 0), 11);
}

#[test]
fn map_value_and_index_pseudo_sources_resolve() {
    let t = TempRegistry::new("pseudo");
    let global = map(&t.registry, map_type::ARRAY, 4, 16);
    let g = global.id();
    // Write 0x55 at byte 8 of the global-data array through map_value(g)+8,
    // then return what map_idx(0) lookups of key 0 find there.
    let text = format!(
        "
        lddw %r1, map_value({g})+8
        mov %r2, 0x55
        stxdw [%r1], %r2
        mov %r1, 0
        stxw [%r10-4], %r1
        lddw %r1, map_fd({g})
        mov %r2, %r10
        add %r2, -4
        call bpf_map_lookup_elem
        jeq %r0, 0, fail
        ldxdw %r0, [%r0+8]
        exit
        fail:
        mov %r0, -1
        exit
        "
    );
    let id = store(&t.registry, &text, &[g]);
    let program = LoadedProgram::from_registry(&t.registry, id).unwrap();
    // SAFETY: the program does not touch its context.
    assert_eq!(unsafe { program.run_detached(std::ptr::null_mut()) }, 0x55);
    let mut value = [0u8; 16];
    global.lookup(&0u32.to_le_bytes(), &mut value).unwrap();
    assert_eq!(value[8], 0x55);
}

#[test]
fn missing_maps_and_kernel_variables_are_load_errors() {
    let t = TempRegistry::new("errors");
    let id = store(&t.registry, "lddw %r1, map_fd(9999)\nmov %r0, 0\nexit", &[]);
    let err = LoadedProgram::from_registry(&t.registry, id).unwrap_err().to_string();
    assert!(err.contains("9999"), "{err}");
    let err = LoadedProgram::from_registry(&t.registry, 424242).unwrap_err().to_string();
    assert!(err.contains("424242"), "{err}");
}

#[test]
fn bpf_loop_calls_back_into_the_program() {
    let t = TempRegistry::new("loop");
    // Sum i for i in 0..10 into a stack slot via bpf_loop; the callback
    // stops early when i == 7 (returns 1), so the loop runs 8 times. The
    // count is the kernel's u32: 2^32 + 10 loops 10 times, not -E2BIG.
    let text = "
        mov %r1, 0
        stxdw [%r10-8], %r1
        lddw %r1, 0x10000000a
        lddw %r2, func(+9)
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call bpf_loop
        ldxdw %r1, [%r10-8]
        lsh %r0, 32
        or %r0, %r1
        exit
        ldxdw %r3, [%r2]
        add %r3, %r1
        stxdw [%r2], %r3
        mov %r0, 0
        jne %r1, 7, +1
        mov %r0, 1
        exit
    ";
    let id = store(&t.registry, text, &[]);
    let program = LoadedProgram::from_registry(&t.registry, id).unwrap();
    // SAFETY: the program does not touch its context.
    let r = unsafe { program.run_detached(std::ptr::null_mut()) };
    assert_eq!(r >> 32, 8, "iterations");
    assert_eq!(r & 0xffff_ffff, (0..=7).sum::<u64>());
}

#[test]
fn env_reaches_helpers() {
    let t = TempRegistry::new("env");
    let text = "call bpf_get_attach_cookie\nmov %r6, %r0\ncall bpf_get_func_ip\nadd %r0, %r6\nexit";
    let id = store(&t.registry, text, &[]);
    let program = LoadedProgram::from_registry(&t.registry, id).unwrap();
    let mut env = RunEnv { cookie: 1000, func_ip: 0x400000, ..RunEnv::detached(id) };
    // SAFETY: the program does not touch its context.
    assert_eq!(unsafe { program.run(std::ptr::null_mut(), &mut env) }, 0x400000 + 1000);
}

#[test]
fn tail_calls_follow_the_prog_array_including_later_updates() {
    let t = TempRegistry::new("tail");
    let array = map(&t.registry, map_type::PROG_ARRAY, 4, 4);
    let a = array.id();
    let target = store(&t.registry, "mov %r0, 42\nexit", &[]);
    let caller_text = |index: u32| format!("lddw %r2, map_fd({a})\nmov %r3, {index}\ncall 12\nmov %r0, 7\nexit");
    let via_slot_1 = store(&t.registry, &caller_text(1), &[a]);
    let via_slot_2 = store(&t.registry, &caller_text(2), &[a]);

    // Loaded while the array is empty: the tail call falls through.
    let early = LoadedProgram::from_registry(&t.registry, via_slot_1).unwrap();
    // SAFETY: the programs do not touch their context.
    assert_eq!(unsafe { early.run_detached(std::ptr::null_mut()) }, 7);

    // The loader fills slot 1; a refresh (the agent's watcher) picks it up.
    array.update(&1u32.to_le_bytes(), &target.to_le_bytes(), 0).unwrap();
    runtime::maps::refresh_bound_maps();
    // SAFETY: as above.
    assert_eq!(unsafe { early.run_detached(std::ptr::null_mut()) }, 42);
    assert!(early.is_jitted(), "{:?}", early.jit_refusal());

    // Programs loaded afterwards see it at once; an empty slot falls through.
    let late = LoadedProgram::from_registry(&t.registry, via_slot_1).unwrap();
    let empty = LoadedProgram::from_registry(&t.registry, via_slot_2).unwrap();
    // SAFETY: as above.
    unsafe {
        assert_eq!(late.run_detached(std::ptr::null_mut()), 42);
        assert_eq!(empty.run_detached(std::ptr::null_mut()), 7);
    }
}

/// The app's own memory, as a program would name it by address.
static APP_MEMORY: [u8; 8] = [0x77; 8];

/// bpftrace 0.20+ copies strings between its scratch map values with
/// `bpf_probe_read_kernel` (and zeroes them with a NULL source): map values
/// and the BPF stack are the runtime's "kernel" memory and read fine; the
/// app's own memory is user memory and gives -ERANGE with the destination
/// zeroed, as the kernel's copy_from_kernel_nofault answers for a user
/// address.
#[test]
fn probe_read_kernel_reads_map_values_and_the_stack_only() {
    let t = TempRegistry::new("read-kernel");
    let global = map(&t.registry, map_type::ARRAY, 4, 64);
    let g = global.id();
    let mut value = [0u8; 64];
    value[..6].copy_from_slice(b"hello\0");
    value[48..56].copy_from_slice(&[0xaa; 8]);
    global.update(&0u32.to_le_bytes(), &value, 0).unwrap();
    // r6: map value -> stack (16 bytes), r7: stack -> value+16, r8: the
    // app's memory -> value+48 (must fail and zero it), r9: NULL -> stack.
    let app = APP_MEMORY.as_ptr() as u64;
    let text = format!(
        "
        lddw %r9, {app:#x}
        mov %r1, %r10
        add %r1, -16
        mov %r2, 16
        lddw %r3, map_value({g})+0
        call bpf_probe_read_kernel
        mov %r6, %r0
        lddw %r1, map_value({g})+16
        mov %r2, 16
        mov %r3, %r10
        add %r3, -16
        call bpf_probe_read_kernel
        mov %r7, %r0
        lddw %r1, map_value({g})+48
        mov %r2, 8
        mov %r3, %r9
        call bpf_probe_read_kernel
        mov %r8, %r0
        mov %r1, %r10
        add %r1, -16
        mov %r2, 16
        mov %r3, 0
        call bpf_probe_read_kernel
        mov %r0, %r6
        or %r0, %r7
        lsh %r0, 8
        and %r8, 0xff
        or %r0, %r8
        exit
        "
    );
    let id = store(&t.registry, &text, &[g]);
    let program = LoadedProgram::from_registry(&t.registry, id).unwrap();
    // SAFETY: the program does not touch its context.
    let r = unsafe { program.run_detached(std::ptr::null_mut()) };
    let erange = (-(libc::ERANGE as i64)) as u64 & 0xff;
    assert_eq!(r, erange, "map value and stack reads return 0, the app's memory -ERANGE");
    global.lookup(&0u32.to_le_bytes(), &mut value).unwrap();
    assert_eq!(&value[16..22], b"hello\0", "copied value -> stack -> value");
    assert_eq!(&value[48..56], &[0; 8], "a failed read zeroes the destination");
}

/// The string kfuncs bpftrace 0.24+ calls (`strlen()`, `strstr()`,
/// `strcontains()`), reached through the ids the syscall server rewrites
/// their BTF-id calls into: they read the run's own memory (map values,
/// the BPF stack) and answer -ERANGE for the app's, with the kernel's
/// results (Linux 6.17+, including a match that ends exactly at `len`).
#[test]
fn string_kfuncs_read_runtime_memory_with_the_kernels_answers() {
    let t = TempRegistry::new("kfuncs");
    let global = map(&t.registry, map_type::ARRAY, 4, 128);
    let g = global.id();
    let mut value = [0u8; 128];
    value[..7].copy_from_slice(b"openat\0");
    value[16..21].copy_from_slice(b"open\0");
    value[32..36].copy_from_slice(b"xyz\0");
    global.update(&0u32.to_le_bytes(), &value, 0).unwrap();
    let (strnlen, strnstr) = (verifier::BPF_STRNLEN, verifier::BPF_STRNSTR);
    let app = APP_MEMORY.as_ptr() as u64;
    let text = format!(
        "
        lddw %r6, map_value({g})+0
        lddw %r1, map_value({g})+0
        mov %r2, 64
        call {strnlen}
        stxdw [%r6+48], %r0
        lddw %r1, map_value({g})+0
        mov %r2, 3
        call {strnlen}
        stxdw [%r6+56], %r0
        lddw %r1, {app:#x}
        mov %r2, 8
        call {strnlen}
        stxdw [%r6+64], %r0
        lddw %r1, map_value({g})+0
        lddw %r2, map_value({g})+16
        mov %r3, 4
        call {strnstr}
        stxdw [%r6+72], %r0
        lddw %r1, map_value({g})+0
        lddw %r2, map_value({g})+32
        mov %r3, 64
        call {strnstr}
        stxdw [%r6+80], %r0
        mov %r1, 0x7461
        stxdw [%r10-8], %r1
        lddw %r1, map_value({g})+0
        mov %r2, %r10
        add %r2, -8
        mov %r3, 64
        call {strnstr}
        stxdw [%r6+88], %r0
        lddw %r1, map_value({g})+0
        mov %r2, %r10
        add %r2, -8
        mov %r3, 5
        call {strnstr}
        stxdw [%r6+96], %r0
        mov %r0, 0
        exit
        "
    );
    let id = store(&t.registry, &text, &[g]);
    let program = LoadedProgram::from_registry(&t.registry, id).unwrap();
    // SAFETY: the program does not touch its context.
    unsafe { program.run_detached(std::ptr::null_mut()) };
    global.lookup(&0u32.to_le_bytes(), &mut value).unwrap();
    let at = |o: usize| i64::from_le_bytes(value[o..o + 8].try_into().unwrap());
    let e = |errno: i32| -(errno as i64);
    assert_eq!(at(48), 6, "strnlen(\"openat\", 64)");
    assert_eq!(at(56), 3, "strnlen(\"openat\", 3) stops at count");
    assert_eq!(at(64), e(libc::ERANGE), "the app's memory is not kernel memory");
    assert_eq!(at(72), 0, "strnstr(\"openat\", \"open\", 4): the match ends at len");
    assert_eq!(at(80), e(libc::ENOENT), "strnstr(\"openat\", \"xyz\")");
    assert_eq!(at(88), 4, "strnstr(\"openat\", \"at\" on the stack)");
    assert_eq!(at(96), e(libc::ENOENT), "\"at\" is not within the first 5 characters");
}

/// `bpf_map_lookup_percpu_elem(map, key, cpu)` reads the value of that CPU
/// (bpftrace 0.20+ sums per-CPU counters with it); a CPU that does not
/// exist gives null; `cpu` is the kernel's u32 (2^40 + 1 is CPU 1).
#[test]
fn map_lookup_percpu_elem_reads_the_given_cpu() {
    let t = TempRegistry::new("percpu-elem");
    let m = map(&t.registry, map_type::PERCPU_ARRAY, 4, 8);
    let ncpu = shm_maps::cpu::nr_possible() as usize;
    let values: Vec<u8> = (0..ncpu as u64).flat_map(|c| (100 + c).to_le_bytes()).collect();
    m.update(&0u32.to_le_bytes(), &values, 0).unwrap();
    let text = |cpu: u64| {
        format!(
            "mov %r1, 0\nstxw [%r10-4], %r1\nlddw %r1, map_fd({})\nmov %r2, %r10\nadd %r2, -4\nlddw %r3, {cpu}\n\
             call bpf_map_lookup_percpu_elem\njeq %r0, 0, +2\nldxdw %r0, [%r0]\nexit\nmov %r0, -1\nexit",
            m.id()
        )
    };
    for (cpu, want) in [(0, 100), ((ncpu - 1) as u64, 100 + ncpu as u64 - 1), (ncpu as u64, u64::MAX), ((1 << 40) + 1, if ncpu > 1 { 101 } else { u64::MAX })] {
        let id = store(&t.registry, &text(cpu), &[m.id()]);
        let program = LoadedProgram::from_registry(&t.registry, id).unwrap();
        // SAFETY: the program does not touch its context.
        assert_eq!(unsafe { program.run_detached(std::ptr::null_mut()) }, want, "cpu {cpu}");
    }
}

static USR1_SEEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    USR1_SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// `bpf_send_signal_thread` (bpftrace's `signal()`): an invalid signal is
/// -EINVAL, signal 0 only checks (0, nothing raised), a second signal in
/// the same run -EBUSY, and the signal arrives once the run is over, on
/// the probed thread.
#[test]
fn send_signal_is_raised_when_the_run_ends() {
    let t = TempRegistry::new("signal");
    // SAFETY: installing a handler that only bumps an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let text = "mov %r1, 65\ncall bpf_send_signal_thread\nmov %r6, %r0\nmov %r1, 0\ncall bpf_send_signal_thread\n\
                mov %r8, %r0\nmov %r1, 10\ncall bpf_send_signal_thread\n\
                mov %r7, %r0\nmov %r1, 10\ncall bpf_send_signal_thread\nlsh %r6, 16\nand %r7, 0xff\nor %r6, %r7\n\
                lsh %r6, 16\nand %r0, 0xffff\nor %r0, %r6\nand %r8, 0xff\nlsh %r8, 24\nor %r0, %r8\nexit";
    let id = store(&t.registry, text, &[]);
    let program = LoadedProgram::from_registry(&t.registry, id).unwrap();
    let before = USR1_SEEN.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: the program does not touch its context.
    let r = unsafe { program.run_detached(std::ptr::null_mut()) };
    let einval = (-(libc::EINVAL as i64)) as u64 & 0xffff;
    let ebusy = (-(libc::EBUSY as i64)) as u64 & 0xffff;
    assert_eq!(r & 0xffff, ebusy, "a second signal in one run");
    assert_eq!((r >> 16) & 0xff, 0, "SIGUSR1 accepted");
    assert_eq!((r >> 24) & 0xff, 0, "signal 0 accepted without taking the slot");
    assert_eq!((r >> 32) & 0xffff, einval, "signal 65");
    assert_eq!(USR1_SEEN.load(std::sync::atomic::Ordering::SeqCst), before + 1, "raised once, after the run");
}
