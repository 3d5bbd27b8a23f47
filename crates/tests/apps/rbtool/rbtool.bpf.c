// SPDX-License-Identifier: GPL-2.0
/* A libbpf-bootstrap-style tool: a uprobe and a uretprobe on one function,
 * the argument kept per thread in a BTF-defined hash map, one ring-buffer
 * record per call at or above a `const volatile` threshold, and `.bss`
 * counters the loader reads through the skeleton's mmap. */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "rbtool.h"

const volatile __u64 min_arg = 0;

__u64 calls = 0;
__u64 returns = 0;
__u64 dropped = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} args SEC(".maps");

SEC("uprobe")
int BPF_KPROBE(on_entry, long a, long b)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 v = a;

	if (v < min_arg)
		return 0;
	__sync_fetch_and_add(&calls, 1);
	bpf_map_update_elem(&args, &tid, &v, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(on_return, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *a = bpf_map_lookup_elem(&args, &tid);
	struct event *e;

	if (!a)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		bpf_map_delete_elem(&args, &tid);
		return 0;
	}
	e->arg = *a;
	e->ret = ret;
	e->same_process = (bpf_get_current_pid_tgid() >> 32) != 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* Counted before the record is published: the loader reads the
	 * counters as soon as it has the last record. */
	__sync_fetch_and_add(&returns, 1);
	bpf_ringbuf_submit(e, 0);
	bpf_map_delete_elem(&args, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
