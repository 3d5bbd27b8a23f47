/* An app that is hard to sample safely: threads that malloc and free
 * without pause (a tick often lands inside the allocator, holding its
 * lock), threads that live a few milliseconds, and a thread that blocks
 * every signal, computes, then waits in sigwaitinfo() for every signal (a
 * tick sent to it would be taken as the app's own). Prints "storm: ok" and exits 0 when every thread finished and
 * the waiting thread got exactly the one signal the app sent it.
 *
 * usage: storm [seconds] (default 2) */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
static volatile unsigned long sink;

static void *churn(void *arg) {
    (void)arg;
    while (!stop) {
        void *p[64];
        for (int i = 0; i < 64; i++)
            p[i] = malloc(16 + (i * 37) % 4000);
        for (int i = 0; i < 64; i++) {
            memset(p[i], i, 16);
            sink += ((unsigned char *)p[i])[3];
            free(p[i]);
        }
    }
    return NULL;
}

static void *brief(void *arg) {
    (void)arg;
    for (int i = 0; i < 20000; i++)
        free(malloc(64 + i % 512));
    return NULL;
}

static int waited_signal;
static void *waiter(void *arg) {
    sigset_t all;
    (void)arg;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    /* CPU time with every signal blocked: a tick sent now stays pending
     * and is what sigwaitinfo() would return. */
    struct timespec t0, t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    do {
        sink++;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < 0.5);
    siginfo_t info;
    waited_signal = sigwaitinfo(&all, &info);
    return NULL;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    pthread_t w, c[3];
    pthread_create(&w, NULL, waiter, NULL);
    for (int i = 0; i < 3; i++)
        pthread_create(&c[i], NULL, churn, NULL);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int spawned = 0;
    do {
        pthread_t b;
        pthread_create(&b, NULL, brief, NULL);
        pthread_join(b, NULL);
        spawned++;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
    stop = 1;
    for (int i = 0; i < 3; i++)
        pthread_join(c[i], NULL);
    pthread_kill(w, SIGUSR1);
    pthread_join(w, NULL);
    if (waited_signal != SIGUSR1) {
        fprintf(stderr, "storm: the waiting thread got signal %d, not SIGUSR1\n", waited_signal);
        return 1;
    }
    fprintf(stderr, "storm: ok (%d short threads)\n", spawned);
    return 0;
}
