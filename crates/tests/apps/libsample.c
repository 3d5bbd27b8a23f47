/* Shared library half of the sample app: uprobes on a library by path. */
__attribute__((noinline)) long lib_mul(long a, long b) { asm volatile(""); return a * b; }

static const char *lib_names[] = { "one", "two", "three" };
__attribute__((noinline)) const char *lib_name(int i) { asm volatile(""); return lib_names[i % 3]; }
