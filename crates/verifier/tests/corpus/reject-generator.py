#!/usr/bin/env python3
"""Writes tests/corpus/reject/*.case: the rejection corpus (one unsafe program
per file with the expected errno and verifier message). Edit the cases here
and re-run: python3 crates/verifier/tests/corpus/reject-generator.py"""
import os
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reject")
for f in os.listdir(OUT):
    os.remove(os.path.join(OUT, f))

def lookup(fd, key_off=-8):
    return f"""mov %r1, 0
stxdw [%r10{key_off}], %r1
lddw %r1, map_fd({fd})
mov %r2, %r10
add %r2, {key_off}
call bpf_map_lookup_elem
"""

def reserve(size=16):
    return f"""lddw %r1, map_fd(4)
mov %r2, {size}
mov %r3, 0
call bpf_ringbuf_reserve
"""

cases = []
def case(name, doc, asm, expect, typ=None, unpriv=False):
    cases.append((name, doc, asm, expect, typ, unpriv))

# ---------------------------------------------------------------- structure
case("last-insn-not-exit", "a program must end in exit or a jump", "mov %r0, 0", "EINVAL last insn is not an exit or jmp")
case("jump-out-of-range-forward", "jump past the end", "mov %r0, 0\nja +5\nexit", "EINVAL jump out of range from insn 1 to 7")
case("jump-out-of-range-backward", "jump before the start", "mov %r0, 0\nja -5\nexit", "EINVAL jump out of range from insn 1 to -3")
case("cond-jump-out-of-range", "conditional jump past the end", "mov %r0, 0\njeq %r0, 0, +9\nexit", "EINVAL jump out of range from insn 1 to 11")
case("jump-into-lddw", "jump into the second slot of lddw", "mov %r0, 0\nja +1\nlddw %r1, 0x100000000\nexit", "EINVAL jump into the middle of ldimm64 insn 2")
case("cond-jump-into-lddw", "conditional jump into the second slot of lddw", "mov %r0, 0\njeq %r0, 1, +1\nlddw %r1, 0x100000000\nexit", "EINVAL jump into the middle of ldimm64 insn 2")
case("unreachable-insn", "dead code after exit", "mov %r0, 0\nexit\nmov %r0, 1\nexit", "EINVAL unreachable insn 2")
case("unknown-opcode", "opcode 0x60 (BPF_LD|BPF_MEM) does not exist", "mov %r0, 0\n.insn 0x0000000000000060\nexit", "EINVAL unknown opcode 60")
case("invalid-alu-opcode", "ALU64 operation 0xf0 does not exist", "mov %r0, 0\n.insn 0x00000000000000f7\nexit", "EINVAL invalid BPF_ALU opcode f0")
case("ld-abs-in-kprobe", "legacy packet loads only exist for socket filters", "mov %r0, 0\n.insn 0x0000000000000020\nexit", "EINVAL BPF_LD_[ABS|IND] instructions not allowed for this program type")
case("lddw-truncated", "lddw in the last slot", "mov %r0, 0\nexit\n.insn 0x0000000000000018", "EINVAL invalid bpf_ld_imm64 insn")
case("lddw-bad-second-slot", "second slot of lddw must have opcode 0", "mov %r0, 0\n.insn 0x0000000000000118\n.insn 0x0000000000000007\nexit", "EINVAL invalid bpf_ld_imm64 insn")
case("alu-reserved-src", "mov with immediate must have src 0", "mov %r0, 0\n.insn 0x00000000000010b7\nexit", "EINVAL BPF_ALU uses reserved fields")
case("alu-reserved-off", "add with a non-zero offset", "mov %r0, 0\n.insn 0x0000000000050007\nexit", "EINVAL BPF_ALU uses reserved fields")
case("div-by-zero-imm", "division by the constant 0", "mov %r0, 1\ndiv %r0, 0\nexit", "EINVAL div by zero")
case("mod-by-zero-imm", "modulo by the constant 0", "mov %r0, 1\nmod32 %r0, 0\nexit", "EINVAL div by zero")
case("shift-too-far", "64-bit shift by 64", "mov %r0, 1\nlsh %r0, 64\nexit", "EINVAL invalid shift 64")
case("shift32-too-far", "32-bit shift by 32", "mov %r0, 1\nrsh32 %r0, 32\nexit", "EINVAL invalid shift 32")
case("invalid-register", "register r11 does not exist", "mov %r11, 0\nmov %r0, 0\nexit", "EINVAL R11 is invalid")
case("kfunc-call", "kernel functions do not exist in userspace", "call runtime 5\nmov %r0, 0\nexit", "EINVAL calling kernel functions (kfuncs) is not supported by userbpf")
case("callx", "indirect calls through a register are not eBPF of any kernel we mirror", "mov %r2, 0\ncall %r2\nmov %r0, 0\nexit", "EINVAL BPF_CALL uses reserved fields")
case("exit-reserved", "exit with a destination register", "mov %r0, 0\n.insn 0x0000000000000195", "EINVAL BPF_EXIT uses reserved fields")
case("jump-into-other-function", "a jump may not leave its function", "mov %r0, 0\ncall local f\nja f\nf:\nmov %r0, 1\nexit", "EINVAL jump out of range from insn 2 to 3")
case("function-falls-through", "the main function must not run into a subprogram", "mov %r0, 0\ncall local f\nmov %r0, 0\nf:\nmov %r0, 1\nexit", "EINVAL last insn is not an exit or jmp")
case("btf-id-lddw", "kernel variables do not exist in userspace", "lddw %r1, btf_id(5)\nmov %r0, 0\nexit", "EINVAL ldimm64 of a kernel variable (BPF_PSEUDO_BTF_ID) is not supported by userbpf")
case("bad-map-fd", "lddw of an fd that is not a map", "lddw %r1, map_fd(99)\nmov %r0, 0\nexit", "EBADF fd 99 is not pointing to valid bpf_map")
case("direct-value-of-hash", "direct value access needs an array", "lddw %r1, map_value(1)+0\nmov %r0, 0\nexit", "EINVAL map type 5 does not support direct value access")
case("direct-value-past-end", "direct value offset outside the value", "lddw %r1, map_value(3)+64\nmov %r0, 0\nexit", "EINVAL invalid access to map value pointer, value_size=64 off=64")
case("atomic-bad-op", "atomic operation 0x10 does not exist", "mov %r1, 1\nstxdw [%r10-8], %r1\n.insn 0x00000010f8a000db\nmov %r0, 0\nexit", "EINVAL BPF_ATOMIC uses invalid atomic opcode 10")
case("atomic-byte-size", "atomics exist for 32 and 64 bits only", "mov %r1, 1\nstxdw [%r10-8], %r1\n.insn 0x00000000fff810d3\nmov %r0, 0\nexit", "EINVAL invalid atomic operand size")

# ---------------------------------------------------------------- uninitialised
case("uninit-reg-alu", "reading a register never written", "mov %r0, 0\nadd %r0, %r2\nexit", "EACCES R2 !read_ok")
case("uninit-r0-exit", "exit without setting r0", "exit", "EACCES R0 !read_ok")
case("uninit-r0-after-void-helper", "ringbuf_submit returns nothing: r0 is not set afterwards",
     reserve() + "jeq %r0, 0, out\nmov %r1, %r0\nmov %r2, 0\ncall bpf_ringbuf_submit\nexit\nout:\nmov %r0, 0\nexit", "EACCES R0 !read_ok")
case("clobbered-by-helper", "helpers clobber r1-r5", "mov %r1, 1\ncall bpf_ktime_get_ns\nmov %r0, %r1\nexit", "EACCES R1 !read_ok")
case("clobbered-by-bpf-call", "BPF-to-BPF calls clobber r1-r5", "mov %r3, 1\ncall local f\nmov %r0, %r3\nexit\nf:\nmov %r0, 0\nexit", "EACCES R3 !read_ok")
case("uninit-stack-read", "reading stack never written", "ldxdw %r0, [%r10-8]\nexit", "EACCES invalid read from stack off -8+0 size 8")
case("partly-init-stack-read", "an 8-byte read of a slot with 4 bytes written", "stw [%r10-8], 0\nldxdw %r0, [%r10-8]\nexit", "EACCES invalid read from stack off -8+4 size 8")
case("uninit-stack-narrow-read", "a 2-byte read of unwritten bytes", "stb [%r10-8], 0\nldxh %r0, [%r10-8]\nexit", "EACCES invalid read from stack off -8+1 size 2")
case("uninit-map-key", "the key passed to a lookup was never written",
     "lddw %r1, map_fd(1)\nmov %r2, %r10\nadd %r2, -8\ncall bpf_map_lookup_elem\nmov %r0, 0\nexit", "EACCES invalid indirect read from stack R2 off -8+0 size 8")
case("uninit-perf-output-data", "perf_event_output of unwritten stack",
     "mov %r6, 0\nstxdw [%r10-8], %r6\nlddw %r2, map_fd(2)\nlddw %r3, 0xffffffff\nmov %r4, %r10\nadd %r4, -16\nmov %r5, 16\ncall bpf_perf_event_output\nmov %r0, 0\nexit",
     "EACCES invalid indirect read from stack R4 off -16+0 size 16")
case("uninit-jump-operand", "comparing an unset register", "mov %r0, 0\njeq %r3, 0, +0\nexit", "EACCES R3 !read_ok")
case("uninit-store-source", "storing an unset register", "stxdw [%r10-8], %r5\nmov %r0, 0\nexit", "EACCES R5 !read_ok")
case("uninit-load-base", "loading through an unset register", "ldxdw %r0, [%r4]\nexit", "EACCES R4 !read_ok")
case("callee-r6-uninit", "a function's r6 starts uninitialised", "mov %r6, 1\ncall local f\nexit\nf:\nmov %r0, %r6\nexit", "EACCES R6 !read_ok")
case("callee-r0-uninit", "a function must set r0 before exit", "call local f\nexit\nf:\nexit", "EACCES R0 !read_ok")
case("uninit-map-update-value", "map update with an unwritten value",
     "mov %r1, 0\nstxdw [%r10-8], %r1\nlddw %r1, map_fd(1)\nmov %r2, %r10\nadd %r2, -8\nmov %r3, %r10\nadd %r3, -16\nmov %r4, 0\ncall bpf_map_update_elem\nmov %r0, 0\nexit",
     "EACCES invalid indirect read from stack R3 off -16+0 size 8")
case("uninit-helper-arg", "lookup with r2 never set", "lddw %r1, map_fd(1)\ncall bpf_map_lookup_elem\nmov %r0, 0\nexit", "EACCES R2 !read_ok")
case("uninit-atomic-target", "atomic add to unwritten stack", "mov %r1, 1\nlock add [%r10-8], %r1\nmov %r0, 0\nexit", "EACCES invalid read from stack off -8+0 size 8")

# ---------------------------------------------------------------- stack bounds and frame pointer
case("stack-write-below", "write 8 bytes below the 512-byte frame", "mov %r1, 0\nstxdw [%r10-520], %r1\nmov %r0, 0\nexit", "EACCES invalid write to stack R10 off=-520 size=8")
case("stack-read-below", "read 1 byte below the frame", "ldxb %r0, [%r10-513]\nexit", "EACCES invalid read from stack R10 off=-513 size=1")
case("stack-write-above", "write at the frame pointer itself", "mov %r1, 0\nstxdw [%r10+0], %r1\nmov %r0, 0\nexit", "EACCES invalid write to stack R10 off=0 size=8")
case("stack-write-straddles-top", "a 4-byte write at -2 crosses the frame pointer", "mov %r1, 0\nstxw [%r10-2], %r1\nmov %r0, 0\nexit", "EACCES invalid write to stack R10 off=-2 size=4")
case("stack-pointer-arith-oob", "pointer moved out of the frame", "mov %r1, %r10\nadd %r1, -600\nstdw [%r1+0], 0\nmov %r0, 0\nexit", "EACCES invalid write to stack R1 off=-600 size=8")
case("stack-pointer-huge-offset", "a stack pointer moved by a huge constant", "mov %r1, %r10\nlddw %r2, 0x7ffffffffffffff0\nadd %r1, %r2\nstdw [%r1+0], 0\nmov %r0, 0\nexit", "EACCES invalid write to stack R1 off=9223372036854775792 size=8")
case("helper-stack-huge-offset", "a helper buffer moved by a huge constant", "mov %r1, %r10\nlddw %r2, 0x7ffffffffffffff0\nadd %r1, %r2\nmov %r2, 16\nmov %r3, 0\ncall bpf_probe_read_user\nmov %r0, 0\nexit", "EINVAL invalid write to stack R1 off=9223372036854775792 size=16")
case("stack-variable-offset", "stack access at an unknown offset",
     "call bpf_get_prandom_u32\nand %r0, 7\nmov %r1, %r10\nadd %r1, -16\nadd %r1, %r0\nstb [%r1+0], 0\nmov %r0, 0\nexit", "EACCES R1 variable offset stack access prohibited")
case("helper-stack-oob", "probe_read of 16 bytes into 8 bytes of stack",
     "mov %r1, %r10\nadd %r1, -8\nmov %r2, 16\nmov %r3, 0\ncall bpf_probe_read_user\nmov %r0, 0\nexit", "EINVAL invalid write to stack R1 off=-8 size=16")
case("helper-key-past-top", "an 8-byte key at -4 crosses the frame pointer",
     "stw [%r10-4], 0\nlddw %r1, map_fd(1)\nmov %r2, %r10\nadd %r2, -4\ncall bpf_map_lookup_elem\nmov %r0, 0\nexit", "EINVAL invalid read from stack R2 off=-4 size=8")
case("fp-write-mov", "r10 is read-only", "mov %r10, 0\nmov %r0, 0\nexit", "EACCES frame pointer is read only")
case("fp-write-add", "r10 cannot be moved", "add %r10, -8\nmov %r0, 0\nexit", "EACCES frame pointer is read only")
case("fp-write-load", "r10 cannot be loaded", "ldxdw %r10, [%r1+0]\nmov %r0, 0\nexit", "EACCES frame pointer is read only")
case("fp-write-lddw", "r10 cannot be set by lddw", "lddw %r10, 0x1\nmov %r0, 0\nexit", "EACCES frame pointer is read only")
case("fp-write-fetch", "an atomic fetch cannot write r10",
     "mov %r1, 0\nstxdw [%r10-8], %r1\n.insn 0x00000001fff8aadb\nmov %r0, 0\nexit", "EACCES R10 leaks addr into mem")
case("get-stack-buffer-too-small", "get_stack writes 16 bytes into 8",
     "mov %r2, %r10\nadd %r2, -8\nmov %r3, 16\nmov %r4, 256\ncall bpf_get_stack\nmov %r0, 0\nexit", "EINVAL invalid write to stack R2 off=-8 size=16")

# ---------------------------------------------------------------- map values
case("null-map-value", "dereferencing a lookup result without a NULL check", lookup(1) + "ldxdw %r1, [%r0+0]\nmov %r0, 0\nexit", "EACCES R0 invalid mem access 'map_value_or_null'")
case("null-branch-deref", "dereferencing on the branch where the lookup failed", lookup(1) + "jne %r0, 0, ok\nldxdw %r1, [%r0+0]\nok:\nmov %r0, 0\nexit", "EACCES R0 invalid mem access 'scalar'")
case("null-check-copy-unchecked", "checking a different lookup's result does not help",
     lookup(1) + "mov %r6, %r0\n" + lookup(1).replace("mov %r1, 0\nstxdw [%r10-8], %r1\n", "") + "jeq %r0, 0, out\nldxdw %r1, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES R6 invalid mem access 'map_value_or_null'")
case("or-null-arith", "pointer arithmetic before the NULL check", lookup(1) + "add %r0, 8\nmov %r0, 0\nexit", "EACCES R0 pointer arithmetic on map_value_or_null prohibited, null-check it first")
case("map-value-read-past-end", "8-byte read at offset 8 of an 8-byte value", lookup(1) + "jeq %r0, 0, out\nldxdw %r1, [%r0+8]\nout:\nmov %r0, 0\nexit", "EACCES invalid access to map value, value_size=8 off=8 size=8")
case("map-value-write-before-start", "write at offset -8", lookup(1) + "jeq %r0, 0, out\nmov %r1, 1\nstxdw [%r0-8], %r1\nout:\nmov %r0, 0\nexit", "EACCES invalid access to map value, value_size=8 off=-8 size=8")
case("map-value-partial-overrun", "4-byte write at offset 6 of an 8-byte value", lookup(1) + "jeq %r0, 0, out\nstw [%r0+6], 1\nout:\nmov %r0, 0\nexit", "EACCES invalid access to map value, value_size=8 off=6 size=4")
case("map-value-unknown-index", "adding an unchecked 64-bit number", lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_ktime_get_ns\nadd %r6, %r0\nldxb %r1, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES R6 min value is negative, either use unsigned index or do a if (index >=0) check.")
case("map-value-unbounded-index", "a non-negative but unbounded index", lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_ktime_get_ns\nrsh %r0, 1\nadd %r6, %r0\nldxb %r1, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES R6 unbounded memory access, make sure to bounds check any such access")
case("map-value-index-mask-too-big", "index masked to 0..63 but 8 bytes read from a 64-byte value", lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_get_prandom_u32\nand %r0, 63\nadd %r6, %r0\nldxdw %r1, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES invalid access to map value, value_size=64 off=63 size=8")
case("map-value-index-upper-check-only", "signed index checked only from above", lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_ktime_get_ns\njsgt %r0, 56, out\nadd %r6, %r0\nldxdw %r1, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES R6 min value is negative, either use unsigned index or do a if (index >=0) check.")
case("map-value-index-off-by-one", "index checked with <= instead of <", lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_ktime_get_ns\njgt %r0, 57, out\nadd %r6, %r0\nldxdw %r1, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES invalid access to map value, value_size=64 off=57 size=8")
case("pointer-leak-into-map", "unprivileged: storing a pointer into a map value", lookup(1) + "jeq %r0, 0, out\nstxdw [%r0+0], %r10\nout:\nmov %r0, 0\nexit",
     "EACCES R10 leaks addr into map", unpriv=True)
case("pointer-leak-into-map-via-update", "unprivileged: a spilled pointer as the value of map_update",
     "mov %r1, 0\nstxdw [%r10-8], %r1\nstxdw [%r10-16], %r10\nlddw %r1, map_fd(1)\nmov %r2, %r10\nadd %r2, -8\nmov %r3, %r10\nadd %r3, -16\nmov %r4, 0\ncall bpf_map_update_elem\nmov %r0, 0\nexit",
     "EACCES invalid indirect read from stack R3 off -16+0 size 8", unpriv=True)
case("or-null-as-key", "an unchecked lookup result used as a key", lookup(1) + "mov %r2, %r0\nlddw %r1, map_fd(1)\ncall bpf_map_lookup_elem\nmov %r0, 0\nexit",
     "EACCES R2 type=map_value_or_null expected=fp, map_key, map_value, mem")
case("map-ptr-deref", "a map is not memory", "lddw %r1, map_fd(1)\nldxdw %r0, [%r1+0]\nexit", "EACCES R1 invalid mem access 'map_ptr'")
case("map-ptr-arith", "a map pointer cannot be moved", "lddw %r1, map_fd(1)\nadd %r1, 8\nmov %r0, 0\nexit", "EACCES R1 pointer arithmetic on map_ptr prohibited")
case("readonly-map-write", "a frozen read-only map (.rodata) cannot be written", "lddw %r1, map_value(6)+0\nstdw [%r1+0], 1\nmov %r0, 0\nexit", "EACCES write into map forbidden, value_size=8 off=0 size=8")
case("readonly-unfrozen-map-write", "BPF_F_RDONLY_PROG forbids program writes even before the map is frozen",
     "mov %r1, 0\nstxdw [%r10-8], %r1\nlddw %r1, map_fd(9)\nmov %r2, %r10\nadd %r2, -8\ncall bpf_map_lookup_elem\njeq %r0, 0, out\nstdw [%r0+0], 1\nout:\nmov %r0, 0\nexit",
     "EACCES write into map forbidden, value_size=8 off=0 size=8")
case("readonly-map-helper-write", "a helper cannot write a read-only map either",
     "lddw %r1, map_value(6)+0\nmov %r2, 8\nmov %r3, 0\ncall bpf_probe_read_user\nmov %r0, 0\nexit", "EACCES write into map forbidden, value_size=8 off=0 size=8")

# ---------------------------------------------------------------- ring buffer references
case("ringbuf-unreleased", "a reservation must be submitted or discarded", reserve() + "jeq %r0, 0, out\nstdw [%r0+0], 1\nout:\nmov %r0, 0\nexit", "EINVAL Unreleased reference id=1 alloc_insn=4")
case("ringbuf-null-deref", "reserve's result must be NULL-checked", reserve() + "stdw [%r0+0], 1\nmov %r0, 0\nexit", "EACCES R0 invalid mem access 'ringbuf_mem_or_null'")
case("ringbuf-oob", "write past the reserved size", reserve() + "jeq %r0, 0, out\nstdw [%r0+16], 1\nmov %r1, %r0\nmov %r2, 0\ncall bpf_ringbuf_submit\nout:\nmov %r0, 0\nexit", "EACCES invalid access to memory, mem_size=16 off=16 size=8")
case("ringbuf-submit-moved", "submit must get the reservation's start", reserve() + "jeq %r0, 0, out\nmov %r1, %r0\nadd %r1, 8\nmov %r2, 0\ncall bpf_ringbuf_submit\nout:\nmov %r0, 0\nexit", "EINVAL R1 must have zero offset when passed to release func")
case("ringbuf-double-submit", "a reservation is released once", reserve() + "jeq %r0, 0, out\nmov %r6, %r0\nmov %r1, %r6\nmov %r2, 0\ncall bpf_ringbuf_submit\nmov %r1, %r6\nmov %r2, 0\ncall bpf_ringbuf_discard\nout:\nmov %r0, 0\nexit", "EACCES R1 type=scalar expected=ringbuf_mem")
case("ringbuf-use-after-submit", "no access after submit", reserve() + "jeq %r0, 0, out\nmov %r6, %r0\nmov %r1, %r6\nmov %r2, 0\ncall bpf_ringbuf_submit\nstdw [%r6+0], 1\nout:\nmov %r0, 0\nexit", "EACCES R6 invalid mem access 'scalar'")
case("ringbuf-variable-size", "reserve needs a constant size", "call bpf_get_prandom_u32\nmov %r2, %r0\nand %r2, 64\nlddw %r1, map_fd(4)\nmov %r3, 0\ncall bpf_ringbuf_reserve\nmov %r0, 0\nexit", "EACCES R2 is not a known constant'")
case("ringbuf-submit-stack", "submit of memory that was not reserved", "mov %r1, %r10\nadd %r1, -8\nmov %r2, 0\ncall bpf_ringbuf_submit\nmov %r0, 0\nexit", "EACCES R1 type=fp expected=ringbuf_mem")
case("ringbuf-output-value-oob", "ringbuf_output of 16 bytes from an 8-byte map value", lookup(1) + "jeq %r0, 0, out\nmov %r2, %r0\nlddw %r1, map_fd(4)\nmov %r3, 16\nmov %r4, 0\ncall bpf_ringbuf_output\nout:\nmov %r0, 0\nexit", "EACCES invalid access to map value, value_size=8 off=0 size=16")

# ---------------------------------------------------------------- context
case("ctx-write", "the context is read-only", "stdw [%r1+0], 0\nmov %r0, 0\nexit", "EACCES invalid bpf_context access off=0 size=8")
case("ctx-read-past-end", "pt_regs is 168 bytes", "ldxdw %r0, [%r1+168]\nexit", "EACCES invalid bpf_context access off=168 size=8")
case("ctx-misaligned", "context reads are naturally aligned", "ldxdw %r0, [%r1+4]\nexit", "EACCES invalid bpf_context access off=4 size=8")
case("ctx-negative", "no reads before the context", "ldxdw %r0, [%r1-8]\nexit", "EACCES invalid bpf_context access off=-8 size=8")
case("ctx-modified", "the context pointer may not be moved before a read", "add %r1, 8\nldxdw %r0, [%r1+0]\nexit", "EACCES dereference of modified ctx ptr R1 off=8 disallowed")
case("raw-tp-misaligned", "raw tracepoint arguments are read naturally aligned", "ldxw %r0, [%r1+2]\nexit", "EACCES invalid bpf_context access off=2 size=4", typ="raw_tracepoint")
case("raw-tp-past-end", "12 arguments at most", "ldxdw %r0, [%r1+96]\nexit", "EACCES invalid bpf_context access off=96 size=8", typ="raw_tracepoint")
case("perf-event-past-end", "bpf_perf_event_data is 184 bytes", "ldxdw %r0, [%r1+184]\nexit", "EACCES invalid bpf_context access off=184 size=8", typ="perf_event")
case("socket-filter-ctx", "socket filter contexts are not modelled", "ldxw %r0, [%r1+0]\nexit", "EACCES invalid bpf_context access off=0 size=4", typ="socket_filter")
case("ctx-atomic", "no atomics on the context", "mov %r2, 1\nlock add [%r1+0], %r2\nmov %r0, 0\nexit", "EACCES BPF_ATOMIC stores into R1 ctx is not allowed")
case("ctx-as-memory-arg", "the context is not a probe_read destination", "mov %r2, 8\nmov %r3, 0\ncall bpf_probe_read_user\nmov %r0, 0\nexit", "EACCES R1 type=ctx expected=fp, map_key, map_value, mem")
case("ctx-lost-by-call", "r1 is clobbered by a helper call", "call bpf_ktime_get_ns\nldxdw %r0, [%r1+0]\nexit", "EACCES R1 !read_ok")

# ---------------------------------------------------------------- scalars used as pointers, pointer arithmetic
case("scalar-deref", "a number is not a pointer", "mov %r1, 0\nldxdw %r0, [%r1+0]\nexit", "EACCES R1 invalid mem access 'scalar'")
case("scalar-store", "storing through a number", "mov %r1, 4096\nstdw [%r1+0], 0\nmov %r0, 0\nexit", "EACCES R1 invalid mem access 'scalar'")
case("lddw-address-deref", "a 64-bit constant is not a pointer", "lddw %r1, 0x7fff00001000\nldxdw %r0, [%r1+0]\nexit", "EACCES R1 invalid mem access 'scalar'")
case("pointer-truncated-by-mov32", "a 32-bit copy of a pointer is a number", "mov32 %r1, %r10\nldxdw %r0, [%r1-8]\nexit", "EACCES R1 invalid mem access 'scalar'")
case("ctx-field-deref", "a value read from pt_regs is a number, not memory", "ldxdw %r2, [%r1+112]\nldxdw %r0, [%r2+0]\nexit", "EACCES R2 invalid mem access 'scalar'")
case("pointer-and", "bitwise operations on pointers", "mov %r1, %r10\nand %r1, -8\nmov %r0, 0\nexit", "EACCES R1 bitwise operator &= on pointer prohibited")
case("pointer-mul", "multiplying a pointer", "mov %r1, %r10\nmul %r1, 2\nmov %r0, 0\nexit", "EACCES R1 pointer arithmetic with *= operator prohibited")
case("pointer-add32", "32-bit arithmetic on a pointer", "mov %r1, %r10\nadd32 %r1, -8\nmov %r0, 0\nexit", "EACCES R1 32-bit pointer arithmetic prohibited")
case("pointer-plus-pointer", "adding two pointers", "mov %r2, %r10\nadd %r2, %r1\nmov %r0, 0\nexit", "EACCES R2 pointer += pointer prohibited")
case("scalar-minus-pointer", "subtracting a pointer from a number", "mov %r2, 100\nsub %r2, %r10\nmov %r0, 0\nexit", "EACCES R2 tried to subtract pointer from scalar")
case("pointer-minus-pointer-unpriv", "unprivileged: pointer differences", "mov %r2, %r10\nsub %r2, %r10\nmov %r0, 0\nexit", "EACCES R2 pointer -= pointer prohibited", unpriv=True)
case("pointer-neg", "negating a pointer", "mov %r2, %r10\nneg %r2\nmov %r0, 0\nexit", "EACCES R2 pointer arithmetic with neg operator prohibited")
case("spilled-pointer-narrow-fill", "reading 4 bytes of a spilled pointer", "stxdw [%r10-8], %r10\nldxw %r0, [%r10-8]\nexit", "EACCES invalid size of register fill")
case("mov32-pointer-unpriv", "unprivileged: a 32-bit copy of a pointer", "mov32 %r0, %r10\nexit", "EACCES R10 partial copy of pointer", unpriv=True)
case("return-pointer-unpriv", "unprivileged: returning a pointer", "mov %r0, %r10\nexit", "EACCES R0 leaks addr as return value", unpriv=True)
case("pointer-compare-unpriv", "unprivileged: comparing pointers", "mov %r0, 0\njgt %r1, %r10, +0\nexit", "EACCES R1 pointer comparison prohibited", unpriv=True)
case("pointer-to-helper-unpriv", "unprivileged: a pointer as a plain helper argument",
     "mov %r1, 0\nstxdw [%r10-8], %r1\nlddw %r1, map_fd(1)\nmov %r2, %r10\nadd %r2, -8\nmov %r3, %r10\nadd %r3, -8\nmov %r4, %r10\ncall bpf_map_update_elem\nmov %r0, 0\nexit",
     "EACCES R4 leaks addr into helper function", unpriv=True)
case("pointer-into-ringbuf-unpriv", "unprivileged: storing a pointer into reserved memory", reserve() + "jeq %r0, 0, out\nstxdw [%r0+0], %r10\nmov %r1, %r0\nmov %r2, 0\ncall bpf_ringbuf_submit\nout:\nmov %r0, 0\nexit", "EACCES R10 leaks addr into mem", unpriv=True)
case("corrupt-spilled-pointer-unpriv", "unprivileged: overwriting part of a spilled pointer", "stxdw [%r10-8], %r10\nstb [%r10-8], 0\nmov %r0, 0\nexit", "EACCES attempt to corrupt spilled pointer on stack", unpriv=True)
case("narrow-spill-pointer-unpriv", "unprivileged: spilling 4 bytes of a pointer", "stxw [%r10-8], %r10\nmov %r0, 0\nexit", "EACCES invalid size of register spill", unpriv=True)
case("pointer-minus-pointer-deref", "a pointer difference is a number", "mov %r2, %r10\nsub %r2, %r10\nldxdw %r0, [%r2+0]\nexit", "EACCES R2 invalid mem access 'scalar'")

# ---------------------------------------------------------------- helpers
case("unknown-helper", "helper 9 is not offered", "call 9\nmov %r0, 0\nexit", "EINVAL unknown func helper#9 (not provided by userbpf)")
case("invalid-helper-id", "helper ids end at 211", "call 100000\nmov %r0, 0\nexit", "EINVAL invalid func unknown#100000")
case("helper-probe-write-user", "bpf_probe_write_user is never offered", "mov %r1, 0\nmov %r2, 0\nmov %r3, 0\ncall 36\nmov %r0, 0\nexit", "EINVAL unknown func helper#36 (not provided by userbpf)")
case("lookup-scalar-map", "a number is not a map", "mov %r1, 1\nmov %r2, %r10\nadd %r2, -8\ncall bpf_map_lookup_elem\nmov %r0, 0\nexit", "EACCES R1 type=scalar expected=map_ptr")
case("lookup-perf-event-array", "perf event arrays have no elements for programs", lookup(2) + "mov %r0, 0\nexit", "EINVAL cannot pass map_type 4 into func bpf_map_lookup_elem#1")
case("perf-output-to-hash", "perf_event_output needs a perf event array",
     "mov %r6, 0\nstxdw [%r10-8], %r6\nlddw %r2, map_fd(1)\nlddw %r3, 0xffffffff\nmov %r4, %r10\nadd %r4, -8\nmov %r5, 8\ncall bpf_perf_event_output\nmov %r0, 0\nexit",
     "EINVAL cannot pass map_type 5 into func bpf_perf_event_output#25")
case("perf-output-without-ctx", "perf_event_output's first argument is the context",
     "mov %r6, 0\nstxdw [%r10-8], %r6\nmov %r1, %r10\nlddw %r2, map_fd(2)\nlddw %r3, 0xffffffff\nmov %r4, %r10\nadd %r4, -8\nmov %r5, 8\ncall bpf_perf_event_output\nmov %r0, 0\nexit",
     "EACCES R1 type=fp expected=ctx")
case("perf-output-unbounded-size", "the size must be bounded",
     "mov %r6, %r1\ncall bpf_ktime_get_ns\nrsh %r0, 1\nmov %r5, %r0\nmov %r1, %r6\nmov %r7, 0\nstxdw [%r10-8], %r7\nlddw %r2, map_fd(2)\nlddw %r3, 0xffffffff\nmov %r4, %r10\nadd %r4, -8\ncall bpf_perf_event_output\nmov %r0, 0\nexit",
     "EACCES R5 unbounded memory access, use 'var &= const' or 'if (var < const)'")
case("probe-read-negative-size", "a size that may be negative",
     "call bpf_ktime_get_ns\nmov %r2, %r0\njsgt %r2, 8, out\nmov %r1, %r10\nadd %r1, -8\nmov %r3, 0\ncall bpf_probe_read_user\nout:\nmov %r0, 0\nexit",
     "EACCES R2 min value is negative, either use unsigned or 'var &= const'")
case("probe-read-size-too-big", "a bounded size still larger than the buffer",
     "call bpf_get_prandom_u32\nmov %r2, %r0\nand %r2, 15\nmov %r1, %r10\nadd %r1, -8\nmov %r3, 0\ncall bpf_probe_read_user\nmov %r0, 0\nexit",
     "EINVAL invalid write to stack R1 off=-8 size=15")
case("get-comm-zero-size", "get_current_comm needs a positive size", "mov %r1, %r10\nadd %r1, -16\nmov %r2, 0\ncall bpf_get_current_comm\nmov %r0, 0\nexit", "EACCES R2 invalid zero-sized read")
case("probe-read-into-small-value", "probe_read of 16 bytes into an 8-byte map value", lookup(1) + "jeq %r0, 0, out\nmov %r1, %r0\nmov %r2, 16\nmov %r3, 0\ncall bpf_probe_read_user\nout:\nmov %r0, 0\nexit", "EACCES invalid access to map value, value_size=8 off=0 size=16")
case("probe-read-size-pointer", "the size is a number", "mov %r1, %r10\nadd %r1, -8\nmov %r2, %r10\nmov %r3, 0\ncall bpf_probe_read_user\nmov %r0, 0\nexit", "EACCES R2 type=fp expected=scalar")
case("probe-read-dst-scalar", "the destination must be memory", "mov %r1, 4096\nmov %r2, 8\nmov %r3, 0\ncall bpf_probe_read_kernel\nmov %r0, 0\nexit", "EACCES R1 type=scalar expected=fp, map_key, map_value, mem")
case("tail-call-wrong-map", "tail calls need a program array", "lddw %r2, map_fd(1)\nmov %r3, 0\ncall bpf_tail_call\nmov %r0, 0\nexit", "EINVAL cannot pass map_type 5 into func bpf_tail_call#12")
case("tail-call-no-ctx", "tail calls pass the context", "mov %r1, 0\nlddw %r2, map_fd(5)\nmov %r3, 0\ncall bpf_tail_call\nmov %r0, 0\nexit", "EACCES R1 type=scalar expected=ctx")
case("stackid-wrong-map", "get_stackid needs a stack trace map", "lddw %r2, map_fd(1)\nmov %r3, 0\ncall bpf_get_stackid\nmov %r0, 0\nexit", "EINVAL cannot pass map_type 5 into func bpf_get_stackid#27")
case("delete-from-perf-event-array", "perf event arrays have no elements to delete (arrays do, at run time: -EINVAL)", lookup(2).replace("call bpf_map_lookup_elem", "call bpf_map_delete_elem") + "mov %r0, 0\nexit", "EINVAL cannot pass map_type 4 into func bpf_map_delete_elem#3")
case("push-to-hash", "push needs a queue or stack", "mov %r1, 0\nstxdw [%r10-8], %r1\nlddw %r1, map_fd(7)\nmov %r2, %r10\nadd %r2, -8\nmov %r3, 0\ncall bpf_map_push_elem\nmov %r0, 0\nexit", "EINVAL cannot pass map_type 1 into func bpf_map_push_elem#87")
case("pop-into-small-buffer", "pop writes value_size bytes", "lddw %r1, map_fd(8)\nmov %r2, %r10\nadd %r2, -4\ncall bpf_map_pop_elem\nmov %r0, 0\nexit", "EINVAL invalid write to stack R2 off=-4 size=8")
case("update-value-too-small", "a 16-byte value from 8 bytes of stack", "mov %r1, 0\nstxw [%r10-4], %r1\nstxdw [%r10-16], %r1\nlddw %r1, map_fd(7)\nmov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -8\nmov %r4, 0\ncall bpf_map_update_elem\nmov %r0, 0\nexit", "EINVAL invalid read from stack R3 off=-8 size=16")
case("loop-callback-not-func", "bpf_loop's callback must be a function", "mov %r1, 10\nmov %r2, 0\nmov %r3, 0\nmov %r4, 0\ncall bpf_loop\nmov %r0, 0\nexit", "EACCES R2 type=scalar expected=func")
case("loop-callback-bad-return", "a bpf_loop callback returns 0 or 1", "mov %r1, 10\nlddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall bpf_loop\nmov %r0, 0\nexit\ncb:\nmov %r0, 2\nexit", "EACCES At callback return the register R0 has value (0x2; 0x2) should have been in (0x0; 0x1)")
case("loop-callback-ctx-oob", "the callback reads past the context it was given",
     "mov %r1, 0\nstxdw [%r10-8], %r1\nmov %r1, 10\nlddw %r2, func(cb)\nmov %r3, %r10\nadd %r3, -8\nmov %r4, 0\ncall bpf_loop\nmov %r0, 0\nexit\ncb:\nldxdw %r0, [%r2+8]\nmov %r0, 0\nexit",
     "EACCES invalid read from stack R2 off=0 size=8")
case("loop-callback-state-changes", "the second iteration sees the stack the first one wrote",
     "stxdw [%r10-8], %r10\nmov %r1, 10\nlddw %r2, func(cb)\nmov %r3, %r10\nadd %r3, -8\nmov %r4, 0\ncall bpf_loop\nmov %r0, 0\nexit\ncb:\nldxdw %r3, [%r2+0]\nldxdw %r4, [%r3-8]\nstdw [%r2+0], 0\nmov %r0, 0\nexit",
     "EACCES R3 invalid mem access 'scalar'")
case("strncmp-stack-string", "bpf_strncmp's second string must be a read-only map value",
     "mov %r1, 0\nstxdw [%r10-8], %r1\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\nmov %r3, %r10\nadd %r3, -8\ncall bpf_strncmp\nmov %r0, 0\nexit", "EACCES R3 type=fp expected=map_value")
case("snprintf-null-with-size", "a NULL buffer needs size 0",
     "mov %r1, 0\nmov %r2, 8\nlddw %r3, map_value(3)+0\nmov %r4, 0\nmov %r5, 0\ncall bpf_snprintf\nmov %r0, 0\nexit", "EACCES R2 must be 0 when R1 is NULL")

# ---------------------------------------------------------------- calls
case("recursion", "a function calling itself", "call local f\nmov %r0, 0\nexit\nf:\ncall local f\nmov %r0, 0\nexit", "EINVAL recursive call from insn 3 to 3")
case("mutual-recursion", "two functions calling each other", "call local f\nmov %r0, 0\nexit\nf:\ncall local g\nexit\ng:\ncall local f\nexit", "EINVAL recursive call from insn 5 to 3")
case("call-chain-too-deep", "nine nested frames", "\n".join(["call local f1\nexit"] + [f"f{k}:\ncall local f{k+1}\nexit" for k in range(1, 9)] + ["f9:\nmov %r0, 0\nexit"]), "E2BIG the call stack of 9 frames is too deep !")
case("return-own-stack", "a function may not return a pointer to its own stack", "call local f\nldxdw %r0, [%r0+0]\nexit\nf:\nmov %r0, %r10\nadd %r0, -8\nexit", "EINVAL cannot return stack pointer to the caller")
case("dangling-stack-pointer", "a pointer into a returned frame's stack", "mov %r1, %r10\nadd %r1, -8\ncall local f\nldxdw %r2, [%r10-8]\nldxdw %r0, [%r2+0]\nexit\nf:\nmov %r2, %r10\nadd %r2, -16\nstdw [%r2+0], 0\nstxdw [%r1+0], %r2\nmov %r0, 0\nexit", "EACCES R2 invalid mem access 'scalar'")
case("callee-caller-stack-oob", "a callee writing past the caller's frame through a pointer", "mov %r1, %r10\nadd %r1, -8\ncall local f\nmov %r0, 0\nexit\nf:\nstdw [%r1+8], 0\nmov %r0, 0\nexit", "EACCES invalid write to stack R1 off=0 size=8")
case("callee-uninit-arg", "arguments not set by the caller are unset in the callee", "call local f\nexit\nf:\nmov %r0, %r2\nexit", "EACCES R2 !read_ok")

# ---------------------------------------------------------------- loops and termination
case("self-loop", "a jump to itself never ends", "mov %r0, 0\nl:\nja l", "EINVAL infinite loop detected at insn 1")
case("loop-no-progress", "a loop whose state never changes", "mov %r0, 0\nl:\nadd %r0, 0\njeq %r0, 0, l\nexit", "EINVAL infinite loop detected at insn 1")
case("loop-unknown-bound", "a loop bounded by an unknown number exceeds the complexity budget",
     "call bpf_ktime_get_ns\nmov %r6, %r0\nmov %r7, 0\nl:\nadd %r7, 1\njlt %r7, %r6, l\nmov %r0, 0\nexit", "E2BIG BPF program is too large. Processed 1000001 insn")
case("loop-wraparound", "a counter that only stops after wrapping around",
     "mov %r0, 0\nl:\nadd %r0, 1\njne %r0, 0, l\nexit", "E2BIG BPF program is too large. Processed 1000001 insn")
case("too-many-pending-branches", "9,000 independent unknown branches in a row",
     "call bpf_get_prandom_u32\n" + "".join(f"jeq %r0, {k}, +0\n" for k in range(9000)) + "mov %r0, 0\nexit",
     "E2BIG The sequence of 8193 jumps is too complex.")
case("back-edge-unpriv", "unprivileged programs may not loop", "mov %r0, 0\nl:\nadd %r0, 1\njlt %r0, 10, l\nexit", "EINVAL back-edge from insn 2 to 1", unpriv=True)
case("backward-ja-unpriv", "unprivileged: backward jump", "mov %r0, 0\njeq %r0, 1, out\nl:\nmov %r0, 1\nja l\nout:\nexit", "EINVAL back-edge from insn 3 to 2", unpriv=True)

# ---------------------------------------------------------------- precision traps (must not be proven safe by mistake)
case("bound-on-stale-copy", "a bound learnt on a copy, once the original moved past the value (the kernel knows r0 = r1 + 60; userbpf forgets the link)",
     lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_get_prandom_u32\nmov %r1, %r0\nadd %r0, 60\njgt %r1, 7, out\nadd %r6, %r0\nldxdw %r2, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES R6 unbounded memory access, make sure to bounds check any such access")
case("jmp32-ignores-upper-bits", "a 32-bit compare says nothing about the upper half",
     lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_ktime_get_ns\njgt32 %r0, 7, out\nadd %r6, %r0\nldxdw %r2, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES R6 min value is negative, either use unsigned index or do a if (index >=0) check.")
case("signed-check-only", "a signed upper bound leaves negative indexes",
     lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_ktime_get_ns\njsgt %r0, 7, out\nadd %r6, %r0\nldxb %r2, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES R6 min value is negative, either use unsigned index or do a if (index >=0) check.")
case("prune-spill-vs-bytes", "a join where one path spilled a constant and the other wrote raw bytes",
     lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_get_prandom_u32\njeq %r0, 0, bytes\nstdw [%r10-16], 0\nja join\nbytes:\nstb [%r10-16], 200\nstb [%r10-15], 1\nsth [%r10-14], 0\nstw [%r10-12], 0\njoin:\nldxdw %r1, [%r10-16]\nadd %r6, %r1\nldxdw %r2, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES R6 min value is negative, either use unsigned index or do a if (index >=0) check.")
case("prune-different-constants", "a join of two constant indexes, one out of bounds",
     lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_get_prandom_u32\nmov %r7, 8\njeq %r0, 0, join\nmov %r7, 64\njoin:\nadd %r6, %r7\nldxdw %r2, [%r6+0]\nout:\nmov %r0, 0\nexit",
     "EACCES invalid access to map value, value_size=64 off=64 size=8")
case("loop-walks-off-stack", "a bounded loop whose pointer walks past the frame",
     "mov %r6, %r10\nadd %r6, -64\nmov %r7, 0\nl:\nstdw [%r6+0], 0\nadd %r6, 8\nadd %r7, 1\njlt %r7, 9, l\nmov %r0, 0\nexit",
     "EACCES invalid write to stack R6 off=0 size=8")
case("loop-index-grows", "a loop index used after the loop exceeds the value",
     lookup(3) + "jeq %r0, 0, out\nmov %r7, 0\nl:\nadd %r7, 8\njlt %r7, 64, l\nadd %r0, %r7\nldxdw %r2, [%r0+0]\nout:\nmov %r0, 0\nexit",
     "EACCES invalid access to map value, value_size=64 off=64 size=8")
case("or-null-spill-unchecked", "a lookup result spilled before its check is still unchecked when filled from another lookup",
     lookup(3) + "stxdw [%r10-16], %r0\n" + lookup(3).replace("mov %r1, 0\nstxdw [%r10-8], %r1\n", "") + "jeq %r0, 0, out\nldxdw %r1, [%r10-16]\nldxdw %r2, [%r1+0]\nout:\nmov %r0, 0\nexit",
     "EACCES R1 invalid mem access 'map_value_or_null'")

# ---------------------------------------------------------------- atomics
case("atomic-pointer-src", "an atomic operand is a number", "stdw [%r10-8], 0\nlock add [%r10-8], %r10\nmov %r0, 0\nexit", "EACCES R10 leaks addr into mem")
case("atomic-on-or-null", "atomic add to an unchecked lookup result", lookup(1) + "mov %r1, 1\nlock add [%r0+0], %r1\nmov %r0, 0\nexit", "EACCES R0 invalid mem access 'map_value_or_null'")
case("atomic-past-value", "atomic add past the value", lookup(1) + "jeq %r0, 0, out\nmov %r1, 1\nlock add [%r0+8], %r1\nout:\nmov %r0, 0\nexit", "EACCES invalid access to map value, value_size=8 off=8 size=8")
case("atomic-spilled-pointer", "atomic add onto a spilled pointer", "stxdw [%r10-8], %r10\nmov %r1, 1\nlock add [%r10-8], %r1\nmov %r0, 0\nexit", "EACCES R10 atomic operation on a spilled pointer prohibited")
case("atomic-misaligned-stack", "atomics are naturally aligned", "stdw [%r10-16], 0\nmov %r1, 1\nlock add [%r10-12], %r1\nmov %r0, 0\nexit", "EACCES misaligned stack access off -12 size 8")
case("atomic-misaligned-value", "an atomic add at offset 4 of a map value", lookup(3) + "jeq %r0, 0, out\nmov %r1, 1\nlock add [%r0+4], %r1\nout:\nmov %r0, 0\nexit", "EACCES misaligned value access off 4 size 8")
case("atomic-variable-offset", "an 8-byte atomic at a multiple of 4", lookup(3) + "jeq %r0, 0, out\nmov %r6, %r0\ncall bpf_get_prandom_u32\nand %r0, 7\nlsh %r0, 2\nadd %r6, %r0\nmov %r1, 1\nlock add [%r6+0], %r1\nout:\nmov %r0, 0\nexit", "EACCES misaligned value access: variable offset for an atomic on R6")
case("cmpxchg-uninit-r0", "cmpxchg compares with r0", "stdw [%r10-8], 0\nmov %r1, 1\nlock cmpxchg [%r10-8], %r1\nmov %r0, 0\nexit", "EACCES R0 !read_ok")

for i, (name, doc, asm, expect, typ, unpriv) in enumerate(cases):
    with open(os.path.join(OUT, f"{i+1:03d}-{name}.case"), "w") as f:
        f.write(f"# {doc}\n")
        if typ:
            f.write(f"-- type {typ}\n")
        if unpriv:
            f.write("-- unprivileged\n")
        f.write("-- asm\n" + asm.strip() + "\n-- expect\n" + expect + "\n")
print(len(cases))
