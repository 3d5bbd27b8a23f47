/*
 * The three JIT benchmark programs written in C, compiled with gcc -O2 by
 * benches/jit.rs and called through the same kind of function pointer as the
 * JIT's code: `uint64_t f(uint8_t *mem)`. Each is the same algorithm as its
 * eBPF counterpart in benches/jit.rs, reading its input from `mem`.
 */
#include <stdint.h>
#include <string.h>

/* Primes below *(uint64_t *)mem, by trial division up to sqrt(n). */
uint64_t count_primes(uint8_t *mem)
{
    uint64_t limit;
    memcpy(&limit, mem, sizeof limit);
    uint64_t count = 0;
    for (uint64_t n = 2; n < limit; n++) {
        for (uint64_t i = 2;; i++) {
            if (i * i > n) {
                count++;
                break;
            }
            if (n % i == 0)
                break;
        }
    }
    return count;
}

/* Copy mem[0, 64 KiB) to mem[64 KiB, 128 KiB), eight bytes at a time. */
uint64_t copy_64k(uint8_t *mem)
{
    const uint64_t *src = (const uint64_t *)mem;
    uint64_t *dst = (uint64_t *)(mem + 65536);
    for (uint64_t i = 0; i < 65536 / 8; i++)
        dst[i] = src[i];
    return 0;
}

/* strcmp of the NUL-terminated strings at mem and mem + 4096. */
uint64_t string_compare(uint8_t *mem)
{
    const uint8_t *a = mem, *b = mem + 4096;
    for (;;) {
        uint8_t x = *a, y = *b;
        if (x != y)
            return (uint64_t)((int64_t)x - (int64_t)y);
        if (x == 0)
            return 0;
        a++;
        b++;
    }
}

/* Returns 1: the cost of entering and leaving compiled code. */
uint64_t return_one(uint8_t *mem)
{
    (void)mem;
    return 1;
}

/* The helper of the helper-call benchmark (kept out of line like a real
 * helper behind a function pointer). */
__attribute__((noinline)) uint64_t mix_helper(uint64_t a, uint64_t b)
{
    return (a ^ b) + 1;
}

/* 1,000 calls of mix_helper, each taking the previous result. */
uint64_t helper_calls(uint8_t *mem)
{
    (void)mem;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < 1000; i++)
        acc = mix_helper(i, acc);
    return acc;
}
