/* Functions for the uretprobe tests: recursion and longjmp out of probed
 * frames. Compiled at -O0 so the recursion stays a real recursion. */
#include <setjmp.h>

long rw_fact(long n) { return n <= 1 ? 1 : n * rw_fact(n - 1); }

static jmp_buf rw_env;

long rw_jumper(long n) {
    if (n == 0)
        longjmp(rw_env, 7);
    return rw_jumper(n - 1) + 1;
}

long rw_run_jump(long n) {
    int r = setjmp(rw_env);
    if (r)
        return -r;
    return rw_jumper(n);
}
