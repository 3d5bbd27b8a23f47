/* Sample app for the funclatency (libbpf-tools) test: calls nap() 5 times
 * for ~3 ms and 5 times for ~20 ms, so a microsecond histogram of nap() has
 * 5 calls in [2048, 16383] and 5 in [16384, 32767].
 * usage: napper [start_delay_ms | signal]
 * With "signal" it prints "napper: waiting" on stdout and naps only after
 * SIGUSR1 (the test sends it once the probes are in place). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    if (argc > 1 && strcmp(argv[1], "signal") == 0) {
        sigset_t set;
        int sig;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        sigprocmask(SIG_BLOCK, &set, NULL);
        printf("napper: waiting\n");
        fflush(stdout);
        sigwait(&set, &sig);
    } else if (argc > 1) {
        sleep_us(atol(argv[1]) * 1000);
    }
    long total = 0;
    for (int i = 0; i < 5; i++)
        total += nap(3000);
    for (int i = 0; i < 5; i++)
        total += nap(20000);
    fprintf(stderr, "napper: done (%ld us)\n", total);
    return 0;
}
