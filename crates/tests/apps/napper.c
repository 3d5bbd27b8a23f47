/* Sample app for the funclatency (libbpf-tools) test: after a start delay,
 * calls nap() 5 times for ~3 ms and 5 times for ~20 ms, so a microsecond
 * histogram of nap() has 5 calls in [2048, 4095] and 5 in [16384, 32767].
 * usage: napper [start_delay_ms] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void sleep_us(long us) {
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) != 0) {
    }
}

__attribute__((noinline)) long nap(long us) {
    asm volatile("");
    sleep_us(us);
    return us;
}

int main(int argc, char **argv) {
    long delay_ms = argc > 1 ? atol(argv[1]) : 0;
    sleep_us(delay_ms * 1000);
    long total = 0;
    for (int i = 0; i < 5; i++)
        total += nap(3000);
    for (int i = 0; i < 5; i++)
        total += nap(20000);
    fprintf(stderr, "napper: done (%ld us)\n", total);
    return 0;
}
