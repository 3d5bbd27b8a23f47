/* Tight loop for the end-to-end per-hit benchmark.
 * usage: bench_loop CALLS
 * Calls hit() CALLS times and prints "loop_ns=<total> calls=<CALLS>" on
 * stdout (bpftrace -c shares it), measured with CLOCK_MONOTONIC around the
 * loop only (no process start, no attach). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long hit(unsigned long x) { asm volatile(""); return x * 3 + 1; }

int main(int argc, char **argv) {
    unsigned long calls = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (unsigned long i = 0; i < calls; i++)
        sink += hit(i);
    clock_gettime(CLOCK_MONOTONIC, &b);
    unsigned long long ns = (unsigned long long)(b.tv_sec - a.tv_sec) * 1000000000ull + (b.tv_nsec - a.tv_nsec);
    printf("loop_ns=%llu calls=%lu\n", ns, calls);
    fflush(stdout);
    return 0;
}
