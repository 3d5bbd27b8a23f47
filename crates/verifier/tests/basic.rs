//! Smoke tests of the public API on small hand-written programs: the shapes
//! bpftrace emits are accepted; the classic mistakes are refused with the
//! kernel's errno and wording. The full corpora live in `corpus.rs`.

use verifier::{map_type, verify, MapDesc, ProgType, PseudoLoad, VerifyOptions, EACCES, EINVAL};
use vm::asm::assemble;

/// fd 1: bpftrace's `@c` (per-CPU hash, u64 -> u64); fd 2: its printf
/// perf event array; fd 3: an array of 64-byte values.
fn maps(p: PseudoLoad) -> Option<MapDesc> {
    let d = |map_type, key_size, value_size| Some(MapDesc { map_type, key_size, value_size, max_entries: 16 });
    match p.imm {
        1 => d(map_type::PERCPU_HASH, 8, 8),
        2 => d(map_type::PERF_EVENT_ARRAY, 4, 4),
        3 => d(map_type::ARRAY, 4, 64),
        _ => None,
    }
}

fn run(src: &str) -> Result<verifier::Verdict, verifier::VerifyError> {
    let insns = assemble(src).expect("assembles");
    verify(&insns, ProgType::Kprobe, &maps, &VerifyOptions { log_level: 1, ..Default::default() })
}


#[test]
fn bpftrace_count_is_accepted() {
    let v = run(&vm::fixtures::bpftrace_count(1)).unwrap_or_else(|e| panic!("{e}\n{}", e.log));
    assert!(v.insns_processed >= 20, "{}", v.log);
    assert!(v.log.contains("call bpf_map_lookup_elem#1"), "{}", v.log);
    assert!(v.log.contains("processed "), "{}", v.log);
}

#[test]
fn null_map_value_is_refused() {
    let src = "mov %r1, 0\nstxdw [%r10-8], %r1\nlddw %r1, map_fd(1)\nmov %r2, %r10\nadd %r2, -8\n\
               call bpf_map_lookup_elem\nldxdw %r1, [%r0]\nmov %r0, 0\nexit";
    let e = run(src).unwrap_err();
    assert_eq!(e.errno, EACCES);
    assert_eq!(e.message, "R0 invalid mem access 'map_value_or_null'");
    assert_eq!(e.insn, Some(7));
    assert!(e.log.ends_with(&format!("{}\nprocessed 7 insns (limit 1000000) max_states_per_insn 1 total_states 1 peak_states 1 mark_read 0\n", e.message)), "{}", e.log);
}

#[test]
fn stack_out_of_bounds_is_refused() {
    let e = run("mov %r1, 0\nstxdw [%r10-520], %r1\nmov %r0, 0\nexit").unwrap_err();
    assert_eq!((e.errno, e.message.as_str()), (EACCES, "invalid write to stack R10 off=-520 size=8"));
}

#[test]
fn uninitialised_register_is_refused() {
    let e = run("mov %r0, %r2\nexit").unwrap_err();
    assert_eq!(e.message, "R2 !read_ok");
}

#[test]
fn missing_r0_is_refused() {
    let e = run("exit").unwrap_err();
    assert_eq!(e.message, "R0 !read_ok");
}

#[test]
fn unbounded_loop_is_refused_and_bounded_loop_accepted() {
    let e = run("mov %r0, 0\nl:\nadd %r0, 0\nja l\n").unwrap_err();
    assert_eq!(e.errno, EINVAL);
    assert!(e.message.starts_with("infinite loop detected"), "{}", e.message);
    run("mov %r0, 0\nl:\nadd %r0, 1\njlt %r0, 100, l\nexit").unwrap();
    let e = verify(
        &assemble("mov %r0, 0\nl:\nadd %r0, 1\njlt %r0, 100, l\nexit").unwrap(),
        ProgType::Kprobe,
        &maps,
        &VerifyOptions { unprivileged: true, ..Default::default() },
    )
    .unwrap_err();
    assert_eq!(e.message, "back-edge from insn 2 to 1");
}

#[test]
fn unknown_helper_is_refused_the_way_bpftrace_probes_for() {
    let e = run("call 9\nexit").unwrap_err();
    assert_eq!(e.errno, EINVAL);
    assert!(e.message.contains("unknown func "), "{}", e.message);
}

/// Safe programs that need the verifier's precision: refusing them would break
/// real bpftrace/libbpf output.
#[test]
fn precise_enough_for_safe_idioms() {
    let lookup3 = "mov %r1, 0\nstxdw [%r10-8], %r1\nlddw %r1, map_fd(3)\nmov %r2, %r10\nadd %r2, -8\ncall bpf_map_lookup_elem\n";
    let cases = [
        // A bound learnt on a copy applies to the original (clang emits this).
        format!("{lookup3}jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_get_prandom_u32\nmov %r1, %r0\njgt %r1, 56, out\nadd %r6, %r0\nldxdw %r2, [%r6+0]\nout:\nmov %r0, 0\nexit"),
        // A NULL check resolves the spilled copy too.
        format!("{lookup3}stxdw [%r10-16], %r0\njeq %r0, 0, out\nldxdw %r1, [%r10-16]\nldxdw %r2, [%r1+0]\nout:\nmov %r0, 0\nexit"),
        // A 32-bit compare bounds a value known to fit in 32 bits.
        format!("{lookup3}jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_get_prandom_u32\njgt32 %r0, 56, out\nadd %r6, %r0\nldxdw %r2, [%r6+0]\nout:\nmov %r0, 0\nexit"),
        // Masked and scaled indexes, aligned atomics through them.
        format!("{lookup3}jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_get_prandom_u32\nand %r0, 7\nlsh %r0, 3\nadd %r6, %r0\nmov %r1, 1\nlock add [%r6+0], %r1\nout:\nmov %r0, 0\nexit"),
        // A bounded loop filling the stack, then reading it back.
        "mov %r6, %r10\nadd %r6, -64\nmov %r7, 0\nl:\nstdw [%r6+0], 0\nadd %r6, 8\nadd %r7, 1\njlt %r7, 8, l\nldxdw %r0, [%r10-64]\nexit".to_string(),
        // Constants read back from the stack keep their value (bpftrace keys).
        format!("{lookup3}jeq %r0, 0, out\nstdw [%r10-24], 48\nldxdw %r1, [%r10-24]\nadd %r0, %r1\nldxdw %r2, [%r0+0]\nout:\nmov %r0, 0\nexit"),
        // A ring buffer record reserved, filled, submitted.
        "lddw %r1, map_fd(4)\nmov %r2, 16\nmov %r3, 0\ncall bpf_ringbuf_reserve\njeq %r0, 0, out\nstdw [%r0+8], 1\nmov %r1, %r0\nmov %r2, 0\ncall bpf_ringbuf_submit\nout:\nmov %r0, 0\nexit".to_string(),
        // A bpf_loop callback reading its context on the caller's stack.
        "stdw [%r10-8], 0\nmov %r1, 10\nlddw %r2, func(cb)\nmov %r3, %r10\nadd %r3, -8\nmov %r4, 0\ncall bpf_loop\nmov %r0, 0\nexit\ncb:\nldxdw %r0, [%r2+0]\nstxdw [%r2+0], %r1\nmov %r0, 0\nexit".to_string(),
    ];
    let maps = |p: PseudoLoad| match p.imm {
        3 => Some(MapDesc { map_type: map_type::ARRAY, key_size: 4, value_size: 64, max_entries: 4 }),
        4 => Some(MapDesc { map_type: map_type::RINGBUF, key_size: 0, value_size: 0, max_entries: 4096 }),
        _ => None,
    };
    for src in &cases {
        let insns = assemble(src).unwrap();
        if let Err(e) = verify(&insns, ProgType::Kprobe, &maps, &VerifyOptions { log_level: 1, ..Default::default() }) {
            panic!("refused a safe program: {e}\n{src}\n{}", e.log);
        }
    }
}

/// Hostile shapes must be refused (or accepted) quickly, never crash the loader.
#[test]
fn hostile_shapes_do_not_blow_up() {
    // 60,000 functions each calling the next: deep call graph, refused on depth.
    let mut src = String::new();
    for f in 0..60_000 {
        src.push_str(&format!("f{f}:\ncall local f{}\nexit\n", f + 1));
    }
    src.push_str("f60000:\nmov %r0, 0\nexit\n");
    let insns = assemble(&src.replacen("f0:\n", "", 1)).unwrap();
    let e = run_insns(&insns).unwrap_err();
    assert_eq!(e.message, "the call stack of 9 frames is too deep !");
    // 16,000 nested backward jumps: liveness must stay linear.
    let mut src = String::from("mov %r0, 0\n");
    for k in 0..16_000 {
        src.push_str(&format!("l{k}:\n"));
    }
    for k in (0..16_000).rev() {
        src.push_str(&format!("jeq %r0, 1, l{k}\n"));
    }
    src.push_str("exit\n");
    let insns = assemble(&src).unwrap();
    run_insns(&insns).unwrap();
    // Too long for the kernel's limit.
    let long = vec![vm::insn::Insn { opc: 0xb7, ..Default::default() }; 1_000_001];
    assert_eq!(run_insns(&long).unwrap_err().errno, verifier::E2BIG);
}

fn run_insns(insns: &[vm::insn::Insn]) -> Result<verifier::Verdict, verifier::VerifyError> {
    verify(insns, ProgType::Kprobe, &maps, &VerifyOptions::default())
}

/// The kernel's `bpf_trace_printk_proto` types two arguments: a one-value
/// format leaves r4 and r5 unset (`bpf_trace_printk("hi %d\n", 1)`).
#[test]
fn trace_printk_checks_only_its_format() {
    let src = "mov %r1, 0x0a6420\nstxdw [%r10-8], %r1\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\nmov %r3, 1\n\
               call bpf_trace_printk\nmov %r0, 0\nexit";
    run(src).unwrap_or_else(|e| panic!("{e}\n{}", e.log));
}

/// bpftrace 0.20+ reads per-CPU values with `bpf_map_lookup_percpu_elem`
/// (which it probes for at start-up): per-CPU maps only, as in the kernel.
#[test]
fn map_lookup_percpu_elem_takes_per_cpu_maps_only() {
    let lookup = |fd: u32| {
        format!(
            "mov %r1, 0\nstxdw [%r10-8], %r1\nlddw %r1, map_fd({fd})\nmov %r2, %r10\nadd %r2, -8\nmov %r3, 1\n\
             call bpf_map_lookup_percpu_elem\njeq %r0, 0, +1\nldxdw %r0, [%r0]\nmov %r0, 0\nexit"
        )
    };
    run(&lookup(1)).unwrap_or_else(|e| panic!("{e}\n{}", e.log));
    let e = run(&lookup(3)).unwrap_err();
    assert_eq!(e.errno, EINVAL);
    assert!(e.message.contains("cannot pass map_type 2 into func bpf_map_lookup_percpu_elem#195"), "{}", e.message);
}

/// `bpf_get_stack` returns the bytes written (at most its size argument) or
/// -errno, which the kernel's verifier knows (do_refine_retval_range):
/// bpftrace 0.20+ bounds its ustack hashing loop by that result.
#[test]
fn get_stack_result_is_bounded_by_its_size() {
    let src = "mov %r7, %r1\nmov %r1, 0\nstxw [%r10-4], %r1\nlddw %r1, map_fd(3)\nmov %r2, %r10\nadd %r2, -4\n\
               call bpf_map_lookup_elem\njeq %r0, 0, out\nmov %r6, %r0\nmov %r1, %r7\nmov %r2, %r6\nmov %r3, 64\n\
               mov %r4, 256\ncall bpf_get_stack\njslt %r0, 8, out\nadd %r0, -8\nadd %r6, %r0\nldxdw %r0, [%r6]\n\
               out:\nmov %r0, 0\nexit";
    run(src).unwrap_or_else(|e| panic!("{e}\n{}", e.log));
}

/// Maps of [`maps`] plus fd 4: a frozen read-only array (libbpf's
/// `.rodata`) whose value holds "hi\0" at 0 and ends in "wxyz" with no NUL.
struct WithRodata;

impl verifier::Maps for WithRodata {
    fn describe(&self, load: PseudoLoad) -> Option<MapDesc> {
        match load.imm {
            4 => Some(MapDesc { map_type: map_type::ARRAY, key_size: 4, value_size: 64, max_entries: 1 }),
            _ => maps(load),
        }
    }
    fn frozen_readonly_value(&self, load: PseudoLoad) -> Option<Vec<u8>> {
        (load.imm == 4).then(|| {
            let mut v = vec![0u8; 64];
            v[..3].copy_from_slice(b"hi\0");
            v[60..].copy_from_slice(b"wxyz");
            v
        })
    }
}

/// `ARG_PTR_TO_CONST_STR` (`bpf_strncmp`'s, `bpf_snprintf`'s format): as
/// the kernel's check_reg_const_str, the string must lie in a frozen
/// read-only array and end inside its value, since the helper reads it
/// without bounds; a writable map, or a string that runs off the value,
/// is refused with the kernel's errno and message.
#[test]
fn const_strings_come_from_frozen_read_only_maps_and_end_in_them() {
    let strncmp = |fd: u32, off: u32| {
        format!(
            "mov %r1, 0\nstxdw [%r10-8], %r1\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\n\
             lddw %r3, map_value({fd})+{off}\ncall bpf_strncmp\nmov %r0, 0\nexit"
        )
    };
    let run_with = |src: &str| {
        let insns = assemble(src).expect("assembles");
        verifier::verify_with_maps(&insns, ProgType::Kprobe, &WithRodata, &VerifyOptions { log_level: 1, ..Default::default() })
    };
    run_with(&strncmp(4, 0)).unwrap_or_else(|e| panic!("{e}\n{}", e.log));
    let e = run_with(&strncmp(3, 0)).unwrap_err();
    assert_eq!((e.errno, e.message.as_str()), (EACCES, "R3 does not point to a readonly map'"));
    let e = run_with(&strncmp(4, 60)).unwrap_err();
    assert_eq!((e.errno, e.message.as_str()), (EINVAL, "string is not zero-terminated"));
}

/// As Linux 6.18's verifier: deleting from an array passes the load (the
/// helper answers -EINVAL when it runs), where a perf event array, which
/// has no elements, is refused.
#[test]
fn delete_from_an_array_is_a_run_time_error_not_a_load_error() {
    let delete = |fd: u32| {
        format!(
            "mov %r1, 0\nstxdw [%r10-8], %r1\nlddw %r1, map_fd({fd})\nmov %r2, %r10\nadd %r2, -8\n\
             call bpf_map_delete_elem\nmov %r0, 0\nexit"
        )
    };
    run(&delete(3)).unwrap_or_else(|e| panic!("{e}\n{}", e.log));
    let e = run(&delete(2)).unwrap_err();
    assert_eq!((e.errno, e.message.as_str()), (EINVAL, "cannot pass map_type 4 into func bpf_map_delete_elem#3"));
}
