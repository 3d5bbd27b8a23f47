/* A small traced application for the agent's integration tests.
 *
 *   target count N      call target_func N times, print "done", exit 0
 *   target loop         call target_func every millisecond until killed
 *   target fork N       fork; the child calls target_func N times; the parent
 *                       waits for it, then prints "done"
 *   target badptr       call target_ptr with a bad and a good pointer
 *   target exec N       exec itself as "target count N"
 *   target detach N     N calls, userbpf_agent_detach(), N calls,
 *                       userbpf_agent_reattach(), N calls
 *   target dlopen LIB   print "ready", dlopen LIB, then call its plugin_func
 *                       every millisecond until stdin closes
 *   target forkwait N   call target_ptr every millisecond until a line arrives
 *                       on stdin, then fork: the child calls target_func N
 *                       times and exits, then the parent does the same
 *   target sigsegv      install a SIGSEGV handler, check sigaction reports
 *                       it, call target_ptr with a bad pointer, then fault
 *                       for real: the handler prints "done" and exits 0
 *   target spin         print "ready", then call target_func in a loop that
 *                       makes no libc call at all (timed by rdtsc) for at
 *                       most about a minute; killed by the test
 *   target sigown       print "ready"; call target_ptr and target_tiny (a
 *                       breakpoint site) every millisecond until a line
 *                       arrives on stdin; then install its own
 *                       SIGTRAP, SIGSEGV and SIGRTMAX-1 handlers, check
 *                       sigaction reports them, raise each once and print
 *                       "handlers"; call target_func and target_tiny every
 *                       millisecond until
 *                       a second line arrives; then check each handler ran
 *                       exactly once (userbpf's signals never reached them)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <signal.h>

__attribute__((noinline)) long target_func(long x) {
    __asm__ volatile("" ::: "memory");
    return x * 2 + 1;
}

__attribute__((noinline)) long target_ptr(const char *p) {
    __asm__ volatile("" ::: "memory");
    return p != 0;
}

/* Shorter than a jump: probed through a breakpoint (int3) site. */
__attribute__((noinline)) long target_tiny(long x) {
    return x;
}

static volatile sig_atomic_t own_signals[3];
static void on_own(int sig, siginfo_t *info, void *ctx) {
    (void)info; (void)ctx;
    if (sig == SIGTRAP) own_signals[0]++;
    else if (sig == SIGSEGV) own_signals[1]++;
    else if (sig == SIGRTMAX - 1) own_signals[2]++;
}

/* Reads stdin without blocking; true once a line (or EOF) arrived. */
static int line_arrived(void) {
    char buf[16];
    return read(0, buf, sizeof buf) >= 0;
}

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    (void)sig; (void)info; (void)ctx;
    static const char msg[] = "done segv-handled\n";
    write(1, msg, sizeof msg - 1);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    long sum = 0;
    if (!strcmp(argv[1], "count") && argc == 3) {
        long n = atol(argv[2]);
        for (long i = 0; i < n; i++) sum += target_func(i);
    } else if (!strcmp(argv[1], "loop")) {
        printf("ready\n");
        fflush(stdout);
        for (long i = 0;; i++) {
            sum += target_func(i);
            usleep(1000);
        }
    } else if (!strcmp(argv[1], "fork") && argc == 3) {
        long n = atol(argv[2]);
        pid_t child = fork();
        if (child < 0) return 3;
        if (child == 0) {
            for (long i = 0; i < n; i++) sum += target_func(i);
            _exit(sum == 0 ? 4 : 0);
        }
        int status = 0;
        waitpid(child, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 5;
    } else if (!strcmp(argv[1], "badptr")) {
        sum += target_ptr((const char *)0x10);
        sum += target_ptr((const char *)~0UL);
        sum += target_ptr("hello");
    } else if (!strcmp(argv[1], "detach") && argc == 3) {
        long n = atol(argv[2]);
        int (*detach)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "userbpf_agent_detach");
        int (*reattach)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "userbpf_agent_reattach");
        if (!detach || !reattach) return 7;
        for (long i = 0; i < n; i++) sum += target_func(i);
        if (detach() != 1) return 8;
        for (long i = 0; i < n; i++) sum += target_func(i);
        if (reattach() != 1) return 9;
        for (long i = 0; i < n; i++) sum += target_func(i);
    } else if (!strcmp(argv[1], "dlopen") && argc == 3) {
        printf("ready\n");
        fflush(stdout);
        void *lib = dlopen(argv[2], RTLD_NOW);
        if (!lib) return 10;
        long (*plugin_func)(long) = (long (*)(long))dlsym(lib, "plugin_func");
        if (!plugin_func) return 11;
        int flags = fcntl(0, F_GETFL);
        fcntl(0, F_SETFL, flags | O_NONBLOCK);
        char buf[16];
        for (long i = 0;; i++) {
            sum += plugin_func(i);
            if (read(0, buf, sizeof buf) == 0) break;
            usleep(1000);
        }
    } else if (!strcmp(argv[1], "forkwait") && argc == 3) {
        long n = atol(argv[2]);
        printf("ready\n");
        fflush(stdout);
        int flags = fcntl(0, F_GETFL);
        fcntl(0, F_SETFL, flags | O_NONBLOCK);
        char buf[16];
        while (read(0, buf, sizeof buf) <= 0) {
            sum += target_ptr("x");
            usleep(1000);
        }
        pid_t child = fork();
        if (child < 0) return 3;
        if (child == 0) {
            for (long i = 0; i < n; i++) sum += target_func(i);
            _exit(0);
        }
        int status = 0;
        waitpid(child, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 5;
        for (long i = 0; i < n; i++) sum += target_func(i);
    } else if (!strcmp(argv[1], "sigsegv")) {
        struct sigaction sa, seen;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        if (sigaction(SIGSEGV, &sa, 0)) return 12;
        if (sigaction(SIGSEGV, 0, &seen)) return 13;
        if (seen.sa_sigaction != on_segv) return 14;
        sum += target_ptr((const char *)0x10);
        fflush(stdout);
        *(volatile int *)0x8 = 1;
        return 15;
    } else if (!strcmp(argv[1], "spin")) {
        printf("ready\n");
        fflush(stdout);
        unsigned long long start = __builtin_ia32_rdtsc();
        while (__builtin_ia32_rdtsc() - start < 200000000000ULL) sum += target_func(sum & 0xffff);
    } else if (!strcmp(argv[1], "sigown")) {
        printf("ready\n");
        fflush(stdout);
        int flags = fcntl(0, F_GETFL);
        fcntl(0, F_SETFL, flags | O_NONBLOCK);
        while (!line_arrived()) {
            sum += target_ptr("x") + target_tiny(1);
            usleep(1000);
        }
        int signals[3] = {SIGTRAP, SIGSEGV, SIGRTMAX - 1};
        for (int i = 0; i < 3; i++) {
            struct sigaction sa, seen;
            memset(&sa, 0, sizeof sa);
            sa.sa_sigaction = on_own;
            sa.sa_flags = SA_SIGINFO;
            if (sigaction(signals[i], &sa, 0)) return 16;
            if (sigaction(signals[i], 0, &seen) || seen.sa_sigaction != on_own) return 17;
            raise(signals[i]);
        }
        if (own_signals[0] != 1 || own_signals[1] != 1 || own_signals[2] != 1) return 18;
        printf("handlers\n");
        fflush(stdout);
        while (!line_arrived()) {
            sum += target_func(sum & 0xffff) + target_tiny(1);
            usleep(1000);
        }
        if (own_signals[0] != 1 || own_signals[1] != 1 || own_signals[2] != 1) return 19;
    } else if (!strcmp(argv[1], "exec") && argc == 3) {
        char *args[] = {argv[0], "count", argv[2], 0};
        execv("/proc/self/exe", args);
        return 6;
    } else {
        return 2;
    }
    printf("done %ld\n", sum);
    return 0;
}
