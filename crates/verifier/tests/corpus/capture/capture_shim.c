/*
 * LD_PRELOAD shim that records every BPF_PROG_LOAD a loader makes (bpftrace,
 * libbpf tools), as userbpf's verifier acceptance corpus. It forwards every
 * call to the kernel unchanged and, for each program, writes
 * $USERBPF_CAPTURE_DIR/<prefix>-<n>.prog:
 *
 *   # <free comment lines>
 *   prog_type <kernel number>
 *   name <prog_name>
 *   kernel_errno <0 if the kernel accepted it, else its errno>
 *   map <fd> <map_type> <key_size> <value_size> <max_entries> <map_flags>   (every map created so far)
 *   frozen <fd> <hex bytes of element 0>   (arrays frozen with BPF_MAP_FREEZE: .rodata)
 *   insn <16 hex digits: the instruction word, little-endian u64>
 *
 * Prefix: $USERBPF_CAPTURE_PREFIX (default "prog").
 * Build: gcc -O1 -fPIC -shared -o capture_shim.so capture_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_MAPS 1024
struct map_rec { int fd; unsigned type, key, value, max, flags; int frozen; unsigned char *elem0; };
static struct map_rec maps[MAX_MAPS];
static int nmaps;
static int nprogs;

static struct map_rec *find_map(int fd) {
    for (int i = 0; i < nmaps; i++)
        if (maps[i].fd == fd) return &maps[i];
    return NULL;
}

static void record_map(int fd, const union bpf_attr *a) {
    struct map_rec *m = find_map(fd);
    if (!m && nmaps < MAX_MAPS) m = &maps[nmaps++];
    if (!m) return;
    free(m->elem0);
    *m = (struct map_rec){fd, a->map_type, a->key_size, a->value_size, a->max_entries, a->map_flags, 0, NULL};
}

/* Element 0 of an array map, as last written by the loader. */
static void record_update(const union bpf_attr *a) {
    struct map_rec *m = find_map((int)a->map_fd);
    if (!m || m->type != BPF_MAP_TYPE_ARRAY || m->key != 4) return;
    const unsigned *key = (const unsigned *)(unsigned long)a->key;
    if (*key != 0) return;
    free(m->elem0);
    m->elem0 = malloc(m->value);
    if (m->elem0) memcpy(m->elem0, (const void *)(unsigned long)a->value, m->value);
}

static void record_prog(const union bpf_attr *a, long ret, int err) {
    const char *dir = getenv("USERBPF_CAPTURE_DIR");
    const char *prefix = getenv("USERBPF_CAPTURE_PREFIX");
    if (!dir) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%03d.prog", dir, prefix ? prefix : "prog", nprogs++);
    FILE *f = fopen(path, "w");
    if (!f) return;
    char name[BPF_OBJ_NAME_LEN + 1] = {0};
    memcpy(name, a->prog_name, BPF_OBJ_NAME_LEN);
    fprintf(f, "prog_type %u\nname %s\nkernel_errno %d\n", a->prog_type, name[0] ? name : "-", ret < 0 ? err : 0);
    for (int i = 0; i < nmaps; i++)
        fprintf(f, "map %d %u %u %u %u %u\n", maps[i].fd, maps[i].type, maps[i].key, maps[i].value, maps[i].max, maps[i].flags);
    for (int i = 0; i < nmaps; i++) {
        if (!maps[i].frozen || !maps[i].elem0) continue;
        fprintf(f, "frozen %d ", maps[i].fd);
        for (unsigned b = 0; b < maps[i].value; b++) fprintf(f, "%02x", maps[i].elem0[b]);
        fprintf(f, "\n");
    }
    const unsigned long long *insns = (const unsigned long long *)(unsigned long)a->insns;
    for (unsigned i = 0; i < a->insn_cnt; i++)
        fprintf(f, "insn %016llx\n", insns[i]);
    fclose(f);
}

long syscall(long nr, ...) {
    static long (*real)(long, ...);
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    va_list ap;
    va_start(ap, nr);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
    va_end(ap);
    long ret = real(nr, a1, a2, a3, a4, a5, a6);
    int err = errno;
    if (nr == SYS_bpf) {
        const union bpf_attr *attr = (const union bpf_attr *)a2;
        if (a1 == BPF_MAP_CREATE && ret >= 0) record_map((int)ret, attr);
        if (a1 == BPF_MAP_UPDATE_ELEM && ret == 0) record_update(attr);
        if (a1 == BPF_MAP_FREEZE && ret == 0) {
            struct map_rec *m = find_map((int)attr->map_fd);
            if (m) m->frozen = 1;
        }
        if (a1 == BPF_PROG_LOAD) record_prog(attr, ret, err);
    }
    errno = err;
    return ret;
}
