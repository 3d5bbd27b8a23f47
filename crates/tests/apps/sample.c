/* Deterministic sample app for userbpf's end-to-end tests.
 *
 * usage: sample [iterations] [start_delay_ms] [per_iteration_us] [hang]
 * Calls each traced function `iterations` times with arguments derived from
 * the loop index, prints nothing on stdout (bpftrace -c shares stdout), and
 * with `hang` non-zero loops forever afterwards (Ctrl-C / -p tests). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long lib_mul(long a, long b);           /* libsample.so */
const char *lib_name(int i);            /* libsample.so */

static volatile long sink;

__attribute__((noinline)) long add2(long a, long b) { asm volatile(""); return a + b; }

__attribute__((noinline)) long six_args(long a, long b, long c, long d, long e, long f) {
    asm volatile("");
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}

__attribute__((noinline)) int greet(const char *who, int times) {
    asm volatile("");
    return (int)strlen(who) * times;
}

__attribute__((noinline)) long work_small(long n) { asm volatile(""); return n * 3; }
__attribute__((noinline)) long work_large(long n) { asm volatile(""); return n * 1000; }

static const char *names[] = { "alpha", "beta", "gamma", "delta" };

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 10;
    long delay_ms = argc > 2 ? atol(argv[2]) : 0;
    long per_us = argc > 3 ? atol(argv[3]) : 0;
    int hang = argc > 4 ? atoi(argv[4]) : 0;
    if (delay_ms > 0)
        usleep(delay_ms * 1000);
    for (;;) {
        for (long i = 0; i < iterations; i++) {
            sink += add2(i, i * 3);
            sink += six_args(i, i + 1, i + 2, i + 3, i + 4, i + 5);
            sink += greet(names[i % 4], (int)(i % 3) + 1);
            sink += (i % 2) ? work_large(i) : work_small(i);
            sink += lib_mul(i, 7);
            sink += (long)strlen(lib_name((int)i));
            if (per_us > 0)
                usleep(per_us);
        }
        if (!hang)
            break;
        usleep(10000);
    }
    fprintf(stderr, "sample: done\n");
    return 0;
}
