// SPDX-License-Identifier: GPL-2.0
/* rbbench BINARY FUNCTION RECORDS [RING_BYTES]: attach rbbench.bpf.c to
 * FUNCTION of BINARY, drain the ring buffer (1 MiB, or RING_BYTES, a power
 * of two, set with bpf_map__set_max_entries before the load) with
 * ring_buffer__poll until RECORDS records (plus the failed reservations)
 * are accounted for, then print "records=N dropped=D drain_ns=T" (T: first
 * record to last). Prints "ready" when attached. For the end-to-end ring
 * buffer benchmark. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/libbpf.h>
#include <linux/types.h>

#include "rbbench.skel.h"

static long seen;
static unsigned long long first_ns, last_ns;

static unsigned long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (unsigned long long)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static int on_event(void *ctx, void *data, size_t len)
{
	(void)ctx;
	(void)data;
	(void)len;
	if (!seen)
		first_ns = now_ns();
	seen++;
	return 0;
}

int main(int argc, char **argv)
{
	struct rbbench_bpf *skel;
	struct ring_buffer *rb;
	long want;
	time_t deadline;

	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: %s BINARY FUNCTION RECORDS [RING_BYTES]\n", argv[0]);
		return 2;
	}
	want = atol(argv[3]);
	skel = rbbench_bpf__open();
	if (!skel) {
		fprintf(stderr, "open: %s\n", strerror(errno));
		return 1;
	}
	if (argc == 5 && bpf_map__set_max_entries(skel->maps.events, (__u32)atol(argv[4]))) {
		fprintf(stderr, "ring size %s: %s\n", argv[4], strerror(errno));
		return 1;
	}
	if (rbbench_bpf__load(skel)) {
		fprintf(stderr, "load: %s\n", strerror(errno));
		return 1;
	}
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = argv[2]);
	skel->links.on_hit = bpf_program__attach_uprobe_opts(skel->progs.on_hit, -1, argv[1], 0, &opts);
	if (!skel->links.on_hit) {
		fprintf(stderr, "attach: %s\n", strerror(errno));
		return 1;
	}
	rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_event, NULL, NULL);
	if (!rb) {
		fprintf(stderr, "ring_buffer__new: %s\n", strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	deadline = time(NULL) + 60;
	while (seen + (long)skel->bss->dropped < want && time(NULL) < deadline) {
		long before = seen;
		int err = ring_buffer__poll(rb, 100);

		if (err < 0 && err != -EINTR)
			break;
		if (seen > before)
			last_ns = now_ns();
	}
	printf("records=%ld dropped=%llu drain_ns=%llu\n", seen, (unsigned long long)skel->bss->dropped,
	       last_ns - first_ns);
	ring_buffer__free(rb);
	rbbench_bpf__destroy(skel);
	return 0;
}
