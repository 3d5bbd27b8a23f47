/* Tight loop for the end-to-end per-hit benchmarks.
 * usage: bench_loop CALLS [THREADS]
 * Calls hit() CALLS times (split over THREADS threads, default 1) and
 * prints "loop_ns=<total> calls=<CALLS>" on stdout (bpftrace -c shares
 * it), measured with CLOCK_MONOTONIC around the loops only (no process
 * start, no attach): from before the first thread starts to after the last
 * one ends. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long hit(unsigned long x) { asm volatile(""); return x * 3 + 1; }

static void *run(void *arg) {
    unsigned long calls = (unsigned long)arg, local = 0;
    for (unsigned long i = 0; i < calls; i++)
        local += hit(i);
    sink += local;
    return NULL;
}

int main(int argc, char **argv) {
    unsigned long calls = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    unsigned long threads = argc > 2 ? strtoul(argv[2], NULL, 10) : 1;
    pthread_t t[64];
    struct timespec a, b;
    if (threads < 1 || threads > 64)
        threads = 1;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (threads == 1) {
        run((void *)calls);
    } else {
        for (unsigned long i = 0; i < threads; i++)
            pthread_create(&t[i], NULL, run, (void *)(calls / threads + (i < calls % threads)));
        for (unsigned long i = 0; i < threads; i++)
            pthread_join(t[i], NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    unsigned long long ns = (unsigned long long)(b.tv_sec - a.tv_sec) * 1000000000ull + (b.tv_nsec - a.tv_nsec);
    printf("loop_ns=%llu calls=%lu\n", ns, calls);
    fflush(stdout);
    return 0;
}
