//! Disassembler to the ubpf-style text of [`crate::asm`]: every instruction
//! is printed in a form the assembler turns back into the very same words
//! (checked per instruction; an encoding with no textual form, e.g. an
//! unknown opcode, is printed as `.insn 0x<word>`). `lddw` pseudo sources are
//! printed as `map_fd(3)`, `map_value(3)+16`, `map_idx(0)`,
//! `map_idx_value(0)+8`, `btf_id(7)`, `func(+5)`; helper calls by kernel name
//! (`call bpf_map_lookup_elem`). Jump and call targets are printed as
//! relative offsets (`+3`, `-2`), as in `llvm-objdump` and ubpf.

use std::fmt::Write;

use crate::insn::*;

/// Kernel helper names by id (`__BPF_FUNC_MAPPER` order of the Linux 6.1
/// uapi header; index 0 is `unspec`, not a helper).
const HELPER_NAMES: [&str; 211] = [
    "unspec", "map_lookup_elem", "map_update_elem", "map_delete_elem", "probe_read",
    "ktime_get_ns", "trace_printk", "get_prandom_u32", "get_smp_processor_id",
    "skb_store_bytes", "l3_csum_replace", "l4_csum_replace", "tail_call", "clone_redirect",
    "get_current_pid_tgid", "get_current_uid_gid", "get_current_comm", "get_cgroup_classid",
    "skb_vlan_push", "skb_vlan_pop", "skb_get_tunnel_key", "skb_set_tunnel_key",
    "perf_event_read", "redirect", "get_route_realm", "perf_event_output", "skb_load_bytes",
    "get_stackid", "csum_diff", "skb_get_tunnel_opt", "skb_set_tunnel_opt", "skb_change_proto",
    "skb_change_type", "skb_under_cgroup", "get_hash_recalc", "get_current_task",
    "probe_write_user", "current_task_under_cgroup", "skb_change_tail", "skb_pull_data",
    "csum_update", "set_hash_invalid", "get_numa_node_id", "skb_change_head",
    "xdp_adjust_head", "probe_read_str", "get_socket_cookie", "get_socket_uid", "set_hash",
    "setsockopt", "skb_adjust_room", "redirect_map", "sk_redirect_map", "sock_map_update",
    "xdp_adjust_meta", "perf_event_read_value", "perf_prog_read_value", "getsockopt",
    "override_return", "sock_ops_cb_flags_set", "msg_redirect_map", "msg_apply_bytes",
    "msg_cork_bytes", "msg_pull_data", "bind", "xdp_adjust_tail", "skb_get_xfrm_state",
    "get_stack", "skb_load_bytes_relative", "fib_lookup", "sock_hash_update",
    "msg_redirect_hash", "sk_redirect_hash", "lwt_push_encap", "lwt_seg6_store_bytes",
    "lwt_seg6_adjust_srh", "lwt_seg6_action", "rc_repeat", "rc_keydown", "skb_cgroup_id",
    "get_current_cgroup_id", "get_local_storage", "sk_select_reuseport",
    "skb_ancestor_cgroup_id", "sk_lookup_tcp", "sk_lookup_udp", "sk_release", "map_push_elem",
    "map_pop_elem", "map_peek_elem", "msg_push_data", "msg_pop_data", "rc_pointer_rel",
    "spin_lock", "spin_unlock", "sk_fullsock", "tcp_sock", "skb_ecn_set_ce",
    "get_listener_sock", "skc_lookup_tcp", "tcp_check_syncookie", "sysctl_get_name",
    "sysctl_get_current_value", "sysctl_get_new_value", "sysctl_set_new_value", "strtol",
    "strtoul", "sk_storage_get", "sk_storage_delete", "send_signal", "tcp_gen_syncookie",
    "skb_output", "probe_read_user", "probe_read_kernel", "probe_read_user_str",
    "probe_read_kernel_str", "tcp_send_ack", "send_signal_thread", "jiffies64",
    "read_branch_records", "get_ns_current_pid_tgid", "xdp_output", "get_netns_cookie",
    "get_current_ancestor_cgroup_id", "sk_assign", "ktime_get_boot_ns", "seq_printf",
    "seq_write", "sk_cgroup_id", "sk_ancestor_cgroup_id", "ringbuf_output", "ringbuf_reserve",
    "ringbuf_submit", "ringbuf_discard", "ringbuf_query", "csum_level", "skc_to_tcp6_sock",
    "skc_to_tcp_sock", "skc_to_tcp_timewait_sock", "skc_to_tcp_request_sock",
    "skc_to_udp6_sock", "get_task_stack", "load_hdr_opt", "store_hdr_opt", "reserve_hdr_opt",
    "inode_storage_get", "inode_storage_delete", "d_path", "copy_from_user", "snprintf_btf",
    "seq_printf_btf", "skb_cgroup_classid", "redirect_neigh", "per_cpu_ptr", "this_cpu_ptr",
    "redirect_peer", "task_storage_get", "task_storage_delete", "get_current_task_btf",
    "bprm_opts_set", "ktime_get_coarse_ns", "ima_inode_hash", "sock_from_file", "check_mtu",
    "for_each_map_elem", "snprintf", "sys_bpf", "btf_find_by_name_kind", "sys_close",
    "timer_init", "timer_set_callback", "timer_start", "timer_cancel", "get_func_ip",
    "get_attach_cookie", "task_pt_regs", "get_branch_snapshot", "trace_vprintk",
    "skc_to_unix_sock", "kallsyms_lookup_name", "find_vma", "loop", "strncmp", "get_func_arg",
    "get_func_ret", "get_func_arg_cnt", "get_retval", "set_retval", "xdp_get_buff_len",
    "xdp_load_bytes", "xdp_store_bytes", "copy_from_user_task", "skb_set_tstamp",
    "ima_file_hash", "kptr_xchg", "map_lookup_percpu_elem", "skc_to_mptcp_sock",
    "dynptr_from_mem", "ringbuf_reserve_dynptr", "ringbuf_submit_dynptr",
    "ringbuf_discard_dynptr", "dynptr_read", "dynptr_write", "dynptr_data",
    "tcp_raw_gen_syncookie_ipv4", "tcp_raw_gen_syncookie_ipv6", "tcp_raw_check_syncookie_ipv4",
    "tcp_raw_check_syncookie_ipv6", "ktime_get_tai_ns", "user_ringbuf_drain", "x",
];

/// Kernel name (`bpf_map_lookup_elem`) of helper `id`.
pub fn helper_name(id: u32) -> Option<String> {
    match HELPER_NAMES.get(id as usize) {
        Some(name) if id != 0 => Some(format!("bpf_{name}")),
        _ => None,
    }
}

/// Helper id of a kernel helper name (`bpf_map_lookup_elem` -> 1).
pub fn helper_id(name: &str) -> Option<u32> {
    let bare = name.strip_prefix("bpf_")?;
    HELPER_NAMES.iter().skip(1).position(|&n| n == bare).map(|i| i as u32 + 1)
}

fn reg(r: u8) -> String {
    format!("%r{r}")
}

fn imm32(imm: i32) -> String {
    if (-4096..=4096).contains(&imm) {
        imm.to_string()
    } else {
        format!("{:#x}", imm as u32)
    }
}

fn memory(base: u8, off: i16) -> String {
    match off {
        0 => format!("[%r{base}]"),
        off if off < 0 => format!("[%r{base}-{}]", -(off as i32)),
        off => format!("[%r{base}+{off}]"),
    }
}

fn size_name(opc: u8) -> &'static str {
    match opc & 0x18 {
        BPF_W => "w",
        BPF_H => "h",
        BPF_B => "b",
        _ => "dw",
    }
}

fn alu_name(op: u8, off: i16) -> Option<&'static str> {
    Some(match (op, off) {
        (BPF_ADD, _) => "add",
        (BPF_SUB, _) => "sub",
        (BPF_MUL, _) => "mul",
        (BPF_DIV, 1) => "sdiv",
        (BPF_DIV, _) => "div",
        (BPF_OR, _) => "or",
        (BPF_AND, _) => "and",
        (BPF_LSH, _) => "lsh",
        (BPF_RSH, _) => "rsh",
        (BPF_MOD, 1) => "smod",
        (BPF_MOD, _) => "mod",
        (BPF_XOR, _) => "xor",
        (BPF_MOV, _) => "mov",
        (BPF_ARSH, _) => "arsh",
        _ => return None,
    })
}

fn jmp_name(op: u8) -> Option<&'static str> {
    Some(match op {
        BPF_JEQ => "jeq",
        BPF_JGT => "jgt",
        BPF_JGE => "jge",
        BPF_JSET => "jset",
        BPF_JNE => "jne",
        BPF_JSGT => "jsgt",
        BPF_JSGE => "jsge",
        BPF_JLT => "jlt",
        BPF_JLE => "jle",
        BPF_JSLT => "jslt",
        BPF_JSLE => "jsle",
        _ => return None,
    })
}

/// Best-effort text of `insn` (`next` is the following slot, for `lddw`);
/// `None` when the instruction has no textual form.
fn render(insn: Insn, next: Option<Insn>) -> Option<String> {
    let op = insn.opc & 0xf0;
    let x = insn.opc & BPF_X != 0;
    let (d, s) = (insn.dst, insn.src);
    Some(match insn.class() {
        BPF_ALU | BPF_ALU64 => {
            let suffix = if insn.class() == BPF_ALU { "32" } else { "" };
            match op {
                BPF_NEG => format!("neg{suffix} {}", reg(d)),
                BPF_END => {
                    let name = match (insn.class(), x) {
                        (BPF_ALU, false) => "le",
                        (BPF_ALU, true) => "be",
                        _ => "bswap",
                    };
                    format!("{name}{} {}", insn.imm, reg(d))
                }
                BPF_MOV if x && insn.off != 0 => {
                    let width = if insn.class() == BPF_ALU { "32" } else { "64" };
                    format!("movsx{}{width} {}, {}", insn.off, reg(d), reg(s))
                }
                _ => {
                    let name = alu_name(op, insn.off)?;
                    let source = if x { reg(s) } else { imm32(insn.imm) };
                    format!("{name}{suffix} {}, {source}", reg(d))
                }
            }
        }
        BPF_LD if insn.opc == LDDW => {
            let high = next?.imm;
            let value = match insn.src {
                0 => format!("{:#x}", (insn.imm as u32 as u64) | ((high as u32 as u64) << 32)),
                BPF_PSEUDO_MAP_FD => format!("map_fd({})", insn.imm),
                BPF_PSEUDO_MAP_VALUE => format!("map_value({})+{}", insn.imm, high),
                BPF_PSEUDO_BTF_ID => format!("btf_id({})", insn.imm),
                BPF_PSEUDO_FUNC => format!("func({:+})", insn.imm),
                BPF_PSEUDO_MAP_IDX => format!("map_idx({})", insn.imm),
                BPF_PSEUDO_MAP_IDX_VALUE => format!("map_idx_value({})+{}", insn.imm, high),
                _ => return None,
            };
            format!("lddw {}, {value}", reg(d))
        }
        BPF_LDX => {
            let signed = if insn.opc & 0xe0 == BPF_MEMSX { "s" } else { "" };
            format!("ldx{signed}{} {}, {}", size_name(insn.opc), reg(d), memory(s, insn.off))
        }
        BPF_ST => format!("st{} {}, {}", size_name(insn.opc), memory(d, insn.off), imm32(insn.imm)),
        BPF_STX if insn.opc & 0xe0 == BPF_ATOMIC => {
            let width = if insn.opc & 0x18 == BPF_W { "32" } else { "" };
            let (fetch, name) = match insn.imm {
                BPF_XCHG => ("", "xchg"),
                BPF_CMPXCHG => ("", "cmpxchg"),
                imm => (
                    if imm & BPF_FETCH != 0 { "fetch " } else { "" },
                    match imm & !BPF_FETCH {
                        0x00 => "add",
                        0x40 => "or",
                        0x50 => "and",
                        0xa0 => "xor",
                        _ => return None,
                    },
                ),
            };
            format!("lock {fetch}{name}{width} {}, {}", memory(d, insn.off), reg(s))
        }
        BPF_STX => format!("stx{} {}, {}", size_name(insn.opc), memory(d, insn.off), reg(s)),
        BPF_JMP | BPF_JMP32 => {
            let suffix = if insn.class() == BPF_JMP32 { "32" } else { "" };
            match op {
                BPF_JA if insn.class() == BPF_JMP32 => format!("ja32 {:+}", insn.imm),
                BPF_JA => format!("ja {:+}", insn.off),
                BPF_EXIT => "exit".to_string(),
                BPF_CALL if x => format!("call {}", reg(d)),
                BPF_CALL => match insn.src {
                    BPF_PSEUDO_CALL => format!("call local {:+}", insn.imm),
                    BPF_PSEUDO_KFUNC_CALL => format!("call runtime {}", insn.imm),
                    _ => match helper_name(insn.imm as u32).filter(|_| insn.imm > 0) {
                        Some(name) => format!("call {name}"),
                        None => format!("call {}", insn.imm),
                    },
                },
                _ => {
                    let name = jmp_name(op)?;
                    let source = if x { reg(s) } else { imm32(insn.imm) };
                    format!("{name}{suffix} {}, {source}, {:+}", reg(d), insn.off)
                }
            }
        }
        _ => return None,
    })
}

/// Text of the instruction at `pc` and the number of slots it occupies
/// (2 for `lddw`). Always re-assembles to the same words.
pub fn disassemble_one(insns: &[Insn], pc: usize) -> (String, usize) {
    let insn = insns[pc];
    let next = insns.get(pc + 1).copied();
    let slots = if insn.is_lddw() && next.is_some() { 2 } else { 1 };
    let expected = &insns[pc..pc + slots];
    match render(insn, next) {
        Some(text) if crate::asm::assemble(&text).is_ok_and(|words| words == expected) => (text, slots),
        _ => (format!(".insn {:#018x}", insn.to_u64()), 1),
    }
}

/// One instruction per line, `lddw` second slots folded into their `lddw`.
/// `crate::asm::assemble(&disassemble(p)) == p` for every input.
pub fn disassemble(insns: &[Insn]) -> String {
    let mut out = String::new();
    let mut pc = 0;
    while pc < insns.len() {
        let (text, slots) = disassemble_one(insns, pc);
        out.push_str(&text);
        out.push('\n');
        pc += slots;
    }
    out
}

/// Like [`disassemble`], each line prefixed with its slot index
/// (`   3: mov %r0, 1`), and jump/call targets annotated with the absolute
/// slot they reach; for listings shown to people.
pub fn listing(insns: &[Insn]) -> String {
    let mut out = String::new();
    let mut pc = 0;
    while pc < insns.len() {
        let (text, slots) = disassemble_one(insns, pc);
        let insn = insns[pc];
        let target = insn.jump_target(pc).or_else(|| insn.local_call_target(pc));
        let _ = match target {
            Some(t) if !text.starts_with(".insn") => writeln!(out, "{pc:5}: {text}  # -> {t}"),
            _ => writeln!(out, "{pc:5}: {text}"),
        };
        pc += slots;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    #[test]
    fn helper_names_round_trip() {
        assert_eq!(helper_name(1).as_deref(), Some("bpf_map_lookup_elem"));
        assert_eq!(helper_name(12).as_deref(), Some("bpf_tail_call"));
        assert_eq!(helper_id("bpf_ktime_get_ns"), Some(5));
        assert_eq!(helper_name(0), None);
        assert_eq!(helper_id("bpf_unspec"), None);
    }

    #[test]
    fn renders_readably() {
        let text = "lddw %r1, map_value(3)+16\ncall bpf_map_lookup_elem\nlock fetch add32 [%r10-8], %r1\n\
                    movsx864 %r2, %r3\nbe16 %r0\njsge32 %r1, -1, +2\ncall local -3\nexit\n";
        let insns = assemble(text).unwrap();
        assert_eq!(disassemble(&insns), text);
    }

    #[test]
    fn golden_text_per_instruction_class() {
        // (opc, dst, src, off, imm, expected text)
        let table: &[(u8, u8, u8, i16, i32, &str)] = &[
            (0x07, 1, 0, 0, -5, "add %r1, -5"),
            (0x0f, 1, 2, 0, 0, "add %r1, %r2"),
            (0x04, 1, 0, 0, 0x10000, "add32 %r1, 0x10000"),
            (0x1c, 3, 4, 0, 0, "sub32 %r3, %r4"),
            (0x27, 0, 0, 0, 7, "mul %r0, 7"),
            (0x37, 0, 0, 0, 3, "div %r0, 3"),
            (0x3f, 0, 1, 1, 0, "sdiv %r0, %r1"),
            (0x94, 0, 0, 1, -3, "smod32 %r0, -3"),
            (0x9f, 0, 1, 0, 0, "mod %r0, %r1"),
            (0x47, 2, 0, 0, 0xff, "or %r2, 255"),
            (0x5c, 2, 3, 0, 0, "and32 %r2, %r3"),
            (0x67, 2, 0, 0, 63, "lsh %r2, 63"),
            (0x7c, 2, 3, 0, 0, "rsh32 %r2, %r3"),
            (0xc7, 2, 0, 0, 1, "arsh %r2, 1"),
            (0x87, 9, 0, 0, 0, "neg %r9"),
            (0x84, 9, 0, 0, 0, "neg32 %r9"),
            (0xa7, 1, 0, 0, -1, "xor %r1, -1"),
            (0xb7, 0, 0, 0, i32::MIN, "mov %r0, 0x80000000"),
            (0xb4, 0, 0, 0, 1, "mov32 %r0, 1"),
            (0xbf, 0, 10, 0, 0, "mov %r0, %r10"),
            (0xbf, 0, 1, 32, 0, "movsx3264 %r0, %r1"),
            (0xbc, 0, 1, 8, 0, "movsx832 %r0, %r1"),
            (0xd4, 0, 0, 0, 32, "le32 %r0"),
            (0xdc, 0, 0, 0, 64, "be64 %r0"),
            (0xd7, 0, 0, 0, 16, "bswap16 %r0"),
            (0x61, 0, 1, 4, 0, "ldxw %r0, [%r1+4]"),
            (0x69, 0, 1, -2, 0, "ldxh %r0, [%r1-2]"),
            (0x71, 0, 1, 0, 0, "ldxb %r0, [%r1]"),
            (0x79, 0, 10, -8, 0, "ldxdw %r0, [%r10-8]"),
            (0x81, 0, 1, 0, 0, "ldxsw %r0, [%r1]"),
            (0x89, 0, 1, 2, 0, "ldxsh %r0, [%r1+2]"),
            (0x91, 0, 1, 3, 0, "ldxsb %r0, [%r1+3]"),
            (0x62, 10, 0, -4, 7, "stw [%r10-4], 7"),
            (0x7a, 10, 0, -8, -1, "stdw [%r10-8], -1"),
            (0x6b, 10, 2, -2, 0, "stxh [%r10-2], %r2"),
            (0x73, 1, 2, 0, 0, "stxb [%r1], %r2"),
            (0xdb, 1, 2, 0, 0x00, "lock add [%r1], %r2"),
            (0xdb, 1, 2, 0, 0x51, "lock fetch and [%r1], %r2"),
            (0xc3, 1, 2, 8, 0x40, "lock or32 [%r1+8], %r2"),
            (0xc3, 1, 2, 0, 0xa1, "lock fetch xor32 [%r1], %r2"),
            (0xdb, 1, 2, 0, 0xe1, "lock xchg [%r1], %r2"),
            (0xc3, 1, 2, 0, 0xf1, "lock cmpxchg32 [%r1], %r2"),
            (0x05, 0, 0, -3, 0, "ja -3"),
            (0x06, 0, 0, 0, 70000, "ja32 +70000"),
            (0x15, 1, 0, 2, 0, "jeq %r1, 0, +2"),
            (0x2d, 1, 2, 1, 0, "jgt %r1, %r2, +1"),
            (0x36, 1, 0, 1, -1, "jge32 %r1, -1, +1"),
            (0x45, 1, 0, 0, 8, "jset %r1, 8, +0"),
            (0x5e, 1, 2, 1, 0, "jne32 %r1, %r2, +1"),
            (0x65, 1, 0, 1, 0, "jsgt %r1, 0, +1"),
            (0x7d, 1, 2, 1, 0, "jsge %r1, %r2, +1"),
            (0xa6, 1, 0, 1, 5, "jlt32 %r1, 5, +1"),
            (0xbd, 1, 2, 1, 0, "jle %r1, %r2, +1"),
            (0xc5, 1, 0, 1, 0, "jslt %r1, 0, +1"),
            (0xde, 1, 2, 1, 0, "jsle32 %r1, %r2, +1"),
            (0x85, 0, 0, 0, 1, "call bpf_map_lookup_elem"),
            (0x85, 0, 0, 0, 100000, "call 100000"),
            (0x85, 0, 1, 0, -7, "call local -7"),
            (0x85, 0, 2, 0, 12, "call runtime 12"),
            (0x8d, 3, 0, 0, 0, "call %r3"),
            (0x95, 0, 0, 0, 0, "exit"),
        ];
        for &(opc, dst, src, off, imm, expected) in table {
            let insns = [Insn::new(opc, dst, src, off, imm)];
            assert_eq!(disassemble_one(&insns, 0), (expected.to_string(), 1), "{opc:#04x}");
        }
        let lddw = |src: u8, imm: i32, next: i32| [Insn::new(LDDW, 1, src, 0, imm), Insn::new(0, 0, 0, 0, next)];
        for (insns, expected) in [
            (lddw(0, -1, 0x7fff_ffff), "lddw %r1, 0x7fffffffffffffff"),
            (lddw(1, 5, 0), "lddw %r1, map_fd(5)"),
            (lddw(2, 5, 24), "lddw %r1, map_value(5)+24"),
            (lddw(3, 77, 0), "lddw %r1, btf_id(77)"),
            (lddw(4, 9, 0), "lddw %r1, func(+9)"),
            (lddw(5, 0, 0), "lddw %r1, map_idx(0)"),
            (lddw(6, 1, 8), "lddw %r1, map_idx_value(1)+8"),
        ] {
            assert_eq!(disassemble_one(&insns, 0), (expected.to_string(), 2));
        }
    }

    /// Every encoding `Program::load` accepts has a textual form (never
    /// `.insn`) that assembles back to the same words.
    #[test]
    fn every_loadable_encoding_has_text() {
        let exit = Insn::new(EXIT, 0, 0, 0, 0);
        let mut checked = 0;
        for opc in 0..=255u8 {
            for (dst, src) in [(0u8, 0u8), (1, 2), (10, 9)] {
                for off in [0i16, 1, -1, 8, 16, 32] {
                    for imm in [0i32, 1, -1, 16, 32, 64, 0x41, 0xe1, 0xf1, 0x1234_5678] {
                        let insn = Insn::new(opc, dst, src, off, imm);
                        let insns = if insn.is_lddw() {
                            vec![insn, Insn::new(0, 0, 0, 0, -2), exit]
                        } else {
                            vec![insn, exit, exit]
                        };
                        let loads = crate::program::Program::load(&insns, &mut |_| Ok(0)).is_ok();
                        if !loads {
                            continue;
                        }
                        checked += 1;
                        let text = disassemble(&insns);
                        assert!(!text.contains(".insn"), "{insn:?} has no text: {text}");
                        assert_eq!(assemble(&text).unwrap(), insns, "{text}");
                    }
                }
            }
        }
        assert!(checked > 1000, "only {checked} loadable encodings");
    }

    #[test]
    fn arbitrary_words_round_trip() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let insns = vec![Insn::from_u64(state), Insn::from_u64(state.rotate_left(29))];
            let text = disassemble(&insns);
            assert_eq!(assemble(&text).unwrap(), insns, "{text}");
        }
    }

    #[test]
    fn unknown_encodings_fall_back_to_raw_words() {
        let insns = vec![Insn::new(0xff, 1, 2, 3, 4), Insn::new(EXIT, 0, 0, 0, 1)];
        let text = disassemble(&insns);
        assert_eq!(text, ".insn 0x00000004000321ff\n.insn 0x0000000100000095\n");
        assert_eq!(assemble(&text).unwrap(), insns);
    }
}
