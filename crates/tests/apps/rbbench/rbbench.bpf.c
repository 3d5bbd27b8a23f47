// SPDX-License-Identifier: GPL-2.0
/* Ring buffer throughput: one 64-byte record per hit (reserve + submit),
 * failed reservations counted in .bss. */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 dropped = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

SEC("uprobe")
int BPF_KPROBE(on_hit, unsigned long x)
{
	__u64 *r = bpf_ringbuf_reserve(&events, 64, 0);

	if (!r) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	r[0] = x;
	bpf_ringbuf_submit(r, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
