/* USDT sample for userbpf's end-to-end tests: three probes in the provider
 * "sample" (<sys/sdt.h>, Debian's systemtap-sdt-dev), one with a semaphore.
 *
 * usage: usdt [iterations] [hang]
 * tick(i, i * 10), tock("hello") and, when enabled, guarded(i) once per
 * iteration; with `hang` non-zero it repeats forever, 10 ms apart (-p
 * tests). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
/* Every probe has a semaphore, as dtrace -G makes them; tick and tock fire
 * whatever theirs says, guarded only while a tracer has bumped its own. */
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

#define SEMAPHORE(name) \
    __extension__ unsigned short sample_##name##_semaphore __attribute__((unused)) __attribute__((section(".probes")))
SEMAPHORE(tick);
SEMAPHORE(tock);
SEMAPHORE(guarded);
#define SAMPLE_GUARDED_ENABLED() __builtin_expect(sample_guarded_semaphore, 0)

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 5;
    int hang = argc > 2 ? atoi(argv[2]) : 0;
    do {
        for (long i = 0; i < n; i++) {
            DTRACE_PROBE2(sample, tick, i, i * 10);
            DTRACE_PROBE1(sample, tock, "hello");
            if (SAMPLE_GUARDED_ENABLED())
                DTRACE_PROBE1(sample, guarded, i);
        }
        if (hang) usleep(10000);
    } while (hang);
    fprintf(stderr, "usdtapp: done\n");
    return 0;
}
