/* USDT sample for userbpf's end-to-end tests: two probes in the provider
 * "sample", without semaphores (<sys/sdt.h>, Debian's systemtap-sdt-dev).
 *
 * usage: usdt [iterations] [hang]
 * tick(i, i * 10) and tock("hello") once per iteration; with `hang`
 * non-zero it repeats forever, 10 ms apart (-p tests). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/sdt.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 5;
    int hang = argc > 2 ? atoi(argv[2]) : 0;
    do {
        for (long i = 0; i < n; i++) {
            DTRACE_PROBE2(sample, tick, i, i * 10);
            DTRACE_PROBE1(sample, tock, "hello");
        }
        if (hang) usleep(10000);
    } while (hang);
    fprintf(stderr, "usdtapp: done\n");
    return 0;
}
