/* A library the target app dlopens after start-up (agent dlopen test). */
__attribute__((noinline)) long plugin_func(long x) {
    __asm__ volatile("" ::: "memory");
    return x + 1;
}
