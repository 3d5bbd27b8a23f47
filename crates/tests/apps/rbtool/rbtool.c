// SPDX-License-Identifier: GPL-2.0
/* rbtool BINARY FUNCTION MIN_ARG EXPECTED: attach rbtool.bpf.c's programs to
 * FUNCTION of BINARY (every process), print each ring-buffer record, and
 * once EXPECTED records arrived (or 20 s passed) print the .bss counters.
 * EXPECTED -1: never drain the ring buffer; print the counters on SIGINT.
 * Prints "ready" when attached. Built by the end-to-end tests with clang,
 * bpftool's skeleton and Debian's libbpf. */
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/libbpf.h>
#include <linux/types.h>

#include "rbtool.h"
#include "rbtool.skel.h"

static long seen;
static volatile sig_atomic_t stop;

static void on_sigint(int sig)
{
	(void)sig;
	stop = 1;
}

static int on_event(void *ctx, void *data, size_t len)
{
	const struct event *e = data;

	(void)ctx;
	if (len < sizeof(*e)) {
		printf("short record: %zu bytes\n", len);
		return 0;
	}
	printf("%s arg=%llu ret=%llu pid_set=%u\n", e->comm, (unsigned long long)e->arg,
	       (unsigned long long)e->ret, e->same_process);
	seen++;
	return 0;
}

int main(int argc, char **argv)
{
	struct rbtool_bpf *skel;
	struct ring_buffer *rb;
	long expected;
	time_t deadline;
	int err;

	if (argc != 5) {
		fprintf(stderr, "usage: %s BINARY FUNCTION MIN_ARG EXPECTED\n", argv[0]);
		return 2;
	}
	expected = atol(argv[4]);
	skel = rbtool_bpf__open();
	if (!skel) {
		fprintf(stderr, "open: %s\n", strerror(errno));
		return 1;
	}
	skel->rodata->min_arg = strtoull(argv[3], NULL, 0);
	err = rbtool_bpf__load(skel);
	if (err) {
		fprintf(stderr, "load: %d\n", err);
		return 1;
	}
	LIBBPF_OPTS(bpf_uprobe_opts, entry, .func_name = argv[2], .retprobe = false);
	LIBBPF_OPTS(bpf_uprobe_opts, ret, .func_name = argv[2], .retprobe = true);
	skel->links.on_entry = bpf_program__attach_uprobe_opts(skel->progs.on_entry, -1, argv[1], 0, &entry);
	skel->links.on_return = bpf_program__attach_uprobe_opts(skel->progs.on_return, -1, argv[1], 0, &ret);
	if (!skel->links.on_entry || !skel->links.on_return) {
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
	if (expected < 0) {
		signal(SIGINT, on_sigint);
		while (!stop)
			usleep(10000);
		printf("calls=%llu returns=%llu dropped=%llu\n", (unsigned long long)skel->bss->calls,
		       (unsigned long long)skel->bss->returns, (unsigned long long)skel->bss->dropped);
		rbtool_bpf__destroy(skel);
		return 0;
	}
	deadline = time(NULL) + 20;
	while (seen < expected && time(NULL) < deadline) {
		err = ring_buffer__poll(rb, 100);
		if (err < 0 && err != -EINTR) {
			fprintf(stderr, "ring_buffer__poll: %d\n", err);
			break;
		}
	}
	ring_buffer__consume(rb);
	printf("calls=%llu returns=%llu dropped=%llu\n", (unsigned long long)skel->bss->calls,
	       (unsigned long long)skel->bss->returns, (unsigned long long)skel->bss->dropped);
	ring_buffer__free(rb);
	rbtool_bpf__destroy(skel);
	return seen == expected ? 0 : 1;
}
