/* A CPU-bound app for the profile tests: `hot` spends about 70% of its
 * work in `heavy` and 30% in `light` (both through `spin`).
 *
 * usage: busy [seconds]   run for this wall time (default 2)
 *        busy -n N        run `hot` N times, then print the CPU seconds its thread used
 * Built with frame pointers, so stacks walk the way the kernel's do. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

/* Each loops itself, so a sample's first frame (its ip) names it; the
 * empty asm after each call keeps it a call (no tail jump). */
__attribute__((noinline)) void heavy(void) {
    for (unsigned long i = 0; i < 700000; i++)
        sink += i * i;
}
__attribute__((noinline)) void light(void) {
    for (unsigned long i = 0; i < 300000; i++)
        sink += i * i;
}
__attribute__((noinline)) void hot(void) { heavy(); light(); asm volatile(""); }

int main(int argc, char **argv) {
    if (argc > 2 && argv[1][0] == '-' && argv[1][1] == 'n') {
        long n = atol(argv[2]);
        for (long i = 0; i < n; i++)
            hot();
        struct timespec cpu;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
        printf("%.6f\n", cpu.tv_sec + cpu.tv_nsec / 1e9);
        return 0;
    }
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        hot();
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
    fprintf(stderr, "busy: done\n");
    return 0;
}
