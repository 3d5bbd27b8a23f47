//! `bpf_snprintf` and `bpf_trace_printk`: the kernel's restricted printf
//! (`bpf_bprintf_prepare` rules: `%d %i %u %x %X` with `l`/`ll`, `%c`, `%s`,
//! `%p`/`%px`/`%pK`, `%pI4 %pi4 %pI6 %pi6`, flags `0 + - space` and a width;
//! anything else is `-EINVAL`). Formatting writes straight into the
//! destination, without allocation; `%s` and `%pI*` arguments are read with
//! the fault-tolerant copy (a bad pointer prints as an empty string or
//! zeros, as in the kernel).
//!
//! Decision: the kernel sends `bpf_trace_printk` to tracefs' `trace_pipe`.
//! Here its lines go to a *trace sink*, a file descriptor the embedder sets
//! with [`set_trace_sink`] (the agent and the syscall server use
//! `<registry>/trace_pipe`, opened `O_APPEND`), in the kernel's line format
//! `<comm>-<pid> [<cpu>] <secs>.<usecs>: bpf_trace_printk: <message>`.
//! With no sink the call still formats and returns the length, so programs
//! behave the same. The write is a system call, like the kernel's path it is
//! meant for debugging, not for hot paths.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::fault;

const EINVAL: i64 = -(libc::EINVAL as i64);
/// Kernel limit on `bpf_snprintf` arguments.
const MAX_ARGS: usize = 12;
/// Longest string a single `%s` reads (the kernel's per-call buffer).
const MAX_STRING_ARG: usize = 512;
/// Longest `bpf_trace_printk` message (the kernel's BPF_TRACE_PRINTK_SIZE).
const TRACE_PRINTK_SIZE: usize = 1024;

static TRACE_SINK: AtomicI32 = AtomicI32::new(-1);

/// Direct `bpf_trace_printk` output to `fd` (-1: discard). Returns the
/// previous sink.
pub fn set_trace_sink(fd: i32) -> i32 {
    TRACE_SINK.swap(fd, Ordering::AcqRel)
}

/// Output that counts every byte but stores only what fits (leaving room
/// for the terminating NUL), like `snprintf`.
struct Output<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Output<'_> {
    fn push(&mut self, byte: u8) {
        if self.len + 1 < self.buf.len() {
            self.buf[self.len] = byte;
        }
        self.len += 1;
    }

    fn push_all(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.push(b));
    }

    fn push_padded(&mut self, spec: &Spec, sign: &[u8], body: &[u8]) {
        let content = sign.len() + body.len();
        let pad = spec.width.saturating_sub(content);
        if spec.left {
            self.push_all(sign);
            self.push_all(body);
            (0..pad).for_each(|_| self.push(b' '));
        } else if spec.zero {
            self.push_all(sign);
            (0..pad).for_each(|_| self.push(b'0'));
            self.push_all(body);
        } else {
            (0..pad).for_each(|_| self.push(b' '));
            self.push_all(sign);
            self.push_all(body);
        }
    }

    /// NUL-terminate; returns the length the full output needs, NUL included.
    fn finish(self) -> usize {
        if !self.buf.is_empty() {
            let end = self.len.min(self.buf.len() - 1);
            self.buf[end] = 0;
        }
        self.len + 1
    }
}

#[derive(Default)]
struct Spec {
    left: bool,
    zero: bool,
    plus: bool,
    space: bool,
    width: usize,
}

/// Render `value` in `radix` into the tail of `scratch`, returning the digits.
fn digits(mut value: u64, radix: u64, upper: bool, scratch: &mut [u8; 64]) -> &[u8] {
    let table: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    let mut i = scratch.len();
    loop {
        i -= 1;
        scratch[i] = table[(value % radix) as usize];
        value /= radix;
        if value == 0 {
            break;
        }
    }
    &scratch[i..]
}

/// Format `fmt` (bytes before its NUL) with `args` into `out`.
/// Returns `Err(-EINVAL)` for a format the kernel would refuse.
fn format(fmt: &[u8], args: &[u64], out: &mut Output) -> Result<(), i64> {
    let mut args = args.iter().copied();
    let mut next_arg = || args.next().ok_or(EINVAL);
    let mut i = 0;
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        if fmt.get(i) == Some(&b'%') {
            out.push(b'%');
            i += 1;
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = fmt.get(i) {
            match f {
                b'-' => spec.left = true,
                b'0' => spec.zero = true,
                b'+' => spec.plus = true,
                b' ' => spec.space = true,
                _ => break,
            }
            i += 1;
        }
        while let Some(&d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
            spec.width = spec.width.saturating_mul(10).saturating_add((d - b'0') as usize);
            i += 1;
        }
        let mut scratch = [0u8; 64];
        match fmt.get(i).copied() {
            Some(b'c') => {
                i += 1;
                spec.zero = false;
                out.push_padded(&spec, b"", &[next_arg()? as u8]);
            }
            Some(b's') => {
                i += 1;
                spec.zero = false;
                let mut string = [0u8; MAX_STRING_ARG];
                // SAFETY: `string` is MAX_STRING_ARG writable bytes.
                let n = unsafe { fault::read_user_str(string.as_mut_ptr(), next_arg()?, MAX_STRING_ARG) };
                let len = if n > 0 { n as usize - 1 } else { 0 };
                out.push_padded(&spec, b"", &string[..len]);
            }
            Some(b'p') => {
                i += 1;
                let kind = fmt.get(i).copied();
                let value = next_arg()?;
                match kind {
                    Some(b'i') | Some(b'I') => {
                        let version = fmt.get(i + 1).copied();
                        i += 2;
                        format_ip(kind == Some(b'I'), version, value, out)?;
                    }
                    Some(b'x') | Some(b'K') => {
                        i += 1;
                        pointer(value, &mut scratch, out);
                    }
                    Some(k) if k.is_ascii_alphanumeric() => return Err(EINVAL),
                    _ => pointer(value, &mut scratch, out),
                }
            }
            _ => {
                let mut long = false;
                while fmt.get(i) == Some(&b'l') {
                    long = true;
                    i += 1;
                }
                let conversion = fmt.get(i).copied().ok_or(EINVAL)?;
                i += 1;
                let raw = next_arg()?;
                match conversion {
                    b'd' | b'i' => {
                        let value = if long { raw as i64 } else { raw as u32 as i32 as i64 };
                        let sign: &[u8] = if value < 0 {
                            b"-"
                        } else if spec.plus {
                            b"+"
                        } else if spec.space {
                            b" "
                        } else {
                            b""
                        };
                        let body = digits(value.unsigned_abs(), 10, false, &mut scratch);
                        out.push_padded(&spec, sign, body);
                    }
                    b'u' | b'x' | b'X' => {
                        let value = if long { raw } else { raw as u32 as u64 };
                        let radix = if conversion == b'u' { 10 } else { 16 };
                        let body = digits(value, radix, conversion == b'X', &mut scratch);
                        out.push_padded(&spec, b"", body);
                    }
                    _ => return Err(EINVAL),
                }
            }
        }
    }
    Ok(())
}

/// `%p`: the kernel prints a 16-digit hex value (hashed; here raw, as `%px`).
fn pointer(value: u64, scratch: &mut [u8; 64], out: &mut Output) {
    let body = digits(value, 16, false, scratch);
    (body.len()..16).for_each(|_| out.push(b'0'));
    out.push_all(body);
}

/// `%pI4 %pi4 %pI6 %pi6`: an address read from user memory.
fn format_ip(long_form: bool, version: Option<u8>, address: u64, out: &mut Output) -> Result<(), i64> {
    let mut scratch = [0u8; 64];
    match version {
        Some(b'4') => {
            let mut ip = [0u8; 4];
            // SAFETY: `ip` is 4 writable bytes.
            unsafe { fault::read_user(ip.as_mut_ptr(), address, 4) };
            for (n, byte) in ip.iter().enumerate() {
                if n > 0 {
                    out.push(b'.');
                }
                let d = digits(*byte as u64, 10, false, &mut scratch);
                if !long_form {
                    (d.len()..3).for_each(|_| out.push(b'0'));
                }
                out.push_all(d);
            }
        }
        Some(b'6') => {
            let mut ip = [0u8; 16];
            // SAFETY: `ip` is 16 writable bytes.
            unsafe { fault::read_user(ip.as_mut_ptr(), address, 16) };
            for (n, pair) in ip.chunks(2).enumerate() {
                if n > 0 && long_form {
                    out.push(b':');
                }
                let d = digits(u16::from_be_bytes([pair[0], pair[1]]) as u64, 16, false, &mut scratch);
                (d.len()..4).for_each(|_| out.push(b'0'));
                out.push_all(d);
            }
        }
        _ => return Err(EINVAL),
    }
    Ok(())
}

/// The format string as the kernel requires it: NUL-terminated within
/// `size` bytes. Returns the bytes before the NUL.
///
/// # Safety
/// `fmt` must be readable for `size` bytes (the verifier proves it).
unsafe fn format_string<'a>(fmt: u64, size: u64) -> Result<&'a [u8], i64> {
    if fmt == 0 || size == 0 {
        return Err(EINVAL);
    }
    let bytes = std::slice::from_raw_parts(fmt as *const u8, size as usize);
    let nul = bytes.iter().position(|&b| b == 0).ok_or(EINVAL)?;
    Ok(&bytes[..nul])
}

/// Longest format string `bpf_snprintf` accepts here (the verifier proved
/// it a NUL-terminated constant; this only bounds the scan).
const MAX_FORMAT_LEN: usize = 4096;

/// A NUL-terminated constant string whose size the caller does not know.
///
/// # Safety
/// `s` must point to a NUL-terminated readable string (verifier-proved).
unsafe fn constant_string<'a>(s: u64) -> Result<&'a [u8], i64> {
    if s == 0 {
        return Err(EINVAL);
    }
    let p = s as *const u8;
    let len = (0..MAX_FORMAT_LEN).find(|&i| *p.add(i) == 0).ok_or(EINVAL)?;
    Ok(std::slice::from_raw_parts(p, len))
}

/// `bpf_snprintf(str, str_size, fmt, data, data_len)`: returns the length
/// of the full output including the NUL, or a negative errno.
pub unsafe extern "C" fn snprintf(dst: u64, dst_size: u64, fmt: u64, data: u64, data_len: u64, _: *mut c_void) -> u64 {
    let run = || -> Result<usize, i64> {
        if !data_len.is_multiple_of(8) || data_len as usize / 8 > MAX_ARGS || (data_len > 0 && data == 0) {
            return Err(EINVAL);
        }
        // SAFETY: the verifier proved fmt a read-only string and data
        // readable for data_len bytes; dst writable for dst_size bytes.
        let fmt = unsafe { constant_string(fmt) }?;
        // SAFETY: as above (data readable for data_len bytes).
        let raw = unsafe { super::guest_bytes(data, data_len) };
        let mut args = [0u64; MAX_ARGS];
        for (arg, bytes) in args.iter_mut().zip(raw.chunks_exact(8)) {
            *arg = u64::from_le_bytes(bytes.try_into().expect("chunks of 8"));
        }
        let args = &args[..raw.len() / 8];
        // SAFETY: as above (dst writable for dst_size bytes).
        let buf = unsafe { super::guest_bytes_mut(dst, dst_size) };
        let mut out = Output { buf, len: 0 };
        format(fmt, args, &mut out)?;
        Ok(out.finish())
    };
    match run() {
        Ok(n) => n as u64,
        Err(e) => e as u64,
    }
}

/// `bpf_trace_printk(fmt, fmt_size, arg1, arg2, arg3)`: formats the
/// message and appends a kernel-shaped line to the trace sink. Returns
/// the message length (without NUL) or a negative errno.
pub unsafe extern "C" fn trace_printk(fmt: u64, fmt_size: u64, a1: u64, a2: u64, a3: u64, env: *mut c_void) -> u64 {
    let _ = env;
    // SAFETY: the verifier proved fmt readable for fmt_size bytes.
    let fmt = match format_string(fmt, fmt_size) {
        Ok(f) => f,
        Err(e) => return e as u64,
    };
    let mut message = [0u8; TRACE_PRINTK_SIZE];
    let mut out = Output { buf: &mut message, len: 0 };
    if let Err(e) = format(fmt, &[a1, a2, a3], &mut out) {
        return e as u64;
    }
    let total = out.finish() - 1;
    let shown = total.min(TRACE_PRINTK_SIZE - 1);
    let sink = TRACE_SINK.load(Ordering::Acquire);
    if sink >= 0 {
        write_trace_line(sink, &message[..shown]);
    }
    total as u64
}

fn write_trace_line(fd: i32, message: &[u8]) {
    let mut line = [0u8; TRACE_PRINTK_SIZE + 128];
    let mut comm = [0u8; 16];
    // SAFETY: helpers called with valid local buffers.
    let (pid_tgid, cpu, now) = unsafe {
        super::task::get_current_comm(comm.as_mut_ptr() as u64, 16, 0, 0, 0, std::ptr::null_mut());
        (
            super::task::get_current_pid_tgid(0, 0, 0, 0, 0, std::ptr::null_mut()),
            super::task::current_cpu(),
            super::misc::ktime_get_ns(0, 0, 0, 0, 0, std::ptr::null_mut()),
        )
    };
    let mut out = Output { buf: &mut line, len: 0 };
    let header_args = [
        comm.as_ptr() as u64,
        pid_tgid & 0xffff_ffff,
        cpu as u64,
        now / 1_000_000_000,
        now % 1_000_000_000 / 1000,
    ];
    // The header format is fixed and valid; it cannot fail.
    let _ = format(b"%16s-%-7d [%03d] %5lu.%06lu: bpf_trace_printk: ", &header_args, &mut out);
    out.push_all(message);
    // Like the kernel's trace output: one newline, whether or not the
    // format ended with one.
    if message.last() != Some(&b'\n') {
        out.push(b'\n');
    }
    let len = out.len.min(line.len() - 1);
    // SAFETY: writing an initialised local buffer to a descriptor.
    unsafe { libc::write(fd, line.as_ptr() as *const c_void, len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snprintf_str(fmt: &str, args: &[u64], size: usize) -> (i64, String) {
        let fmt = format!("{fmt}\0");
        let mut buf = vec![0xffu8; size];
        // SAFETY: buffers sized as passed.
        let r = unsafe {
            snprintf(buf.as_mut_ptr() as u64, size as u64, fmt.as_ptr() as u64, args.as_ptr() as u64, (args.len() * 8) as u64, std::ptr::null_mut())
        } as i64;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
        (r, String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    #[test]
    fn integers_and_flags() {
        assert_eq!(snprintf_str("%d %u %x %X", &[-5i64 as u64, 7, 255, 255], 64), (11, "-5 7 ff FF".into()));
        // Without `l` integers are 32-bit.
        assert_eq!(snprintf_str("%d|%ld", &[0xffff_ffff, 0xffff_ffff], 64).1, "-1|4294967295");
        assert_eq!(snprintf_str("[%5d][%-5d][%05d][%+d]", &[42, 42, 42, 42], 64).1, "[   42][42   ][00042][+42]");
        assert_eq!(snprintf_str("%lld %llx %%", &[u64::MAX, u64::MAX], 64).1, "-1 ffffffffffffffff %");
    }

    #[test]
    fn strings_chars_pointers() {
        let s = b"world\0";
        assert_eq!(snprintf_str("hello %s%c", &[s.as_ptr() as u64, b'!' as u64], 64).1, "hello world!");
        assert_eq!(snprintf_str("[%s]", &[0], 64).1, "[]");
        assert_eq!(snprintf_str("%p", &[0x1234], 64).1, "0000000000001234");
        let ip = [10u8, 0, 0, 1];
        assert_eq!(snprintf_str("%pI4 %pi4", &[ip.as_ptr() as u64, ip.as_ptr() as u64], 64).1, "10.0.0.1 010.000.000.001");
    }

    #[test]
    fn truncation_reports_full_length() {
        assert_eq!(snprintf_str("%d", &[123456], 4), (7, "123".into()));
    }

    #[test]
    fn null_buffer_and_no_arguments_measure_the_output() {
        let fmt = b"abc\0";
        // SAFETY: NULL with size 0 is allowed for both buffers.
        let r = unsafe { snprintf(0, 0, fmt.as_ptr() as u64, 0, 0, std::ptr::null_mut()) };
        assert_eq!(r, 4);
    }

    #[test]
    fn refused_formats() {
        assert_eq!(snprintf_str("%f", &[1], 64).0, EINVAL);
        assert_eq!(snprintf_str("%d %d", &[1], 64).0, EINVAL);
        assert_eq!(snprintf_str("%pZ", &[1], 64).0, EINVAL);
    }

    #[test]
    fn trace_printk_writes_a_kernel_shaped_line() {
        let mut fds = [0i32; 2];
        // SAFETY: pipe into a local array; the read end is drained below.
        unsafe { assert_eq!(libc::pipe(fds.as_mut_ptr()), 0) };
        let previous = set_trace_sink(fds[1]);
        let fmt = b"x=%d\0";
        // SAFETY: fmt is 5 readable bytes.
        let n = unsafe { trace_printk(fmt.as_ptr() as u64, 5, 42, 0, 0, std::ptr::null_mut()) };
        set_trace_sink(previous);
        assert_eq!(n, 4);
        let mut buf = [0u8; 512];
        // SAFETY: reading into a local buffer.
        let got = unsafe { libc::read(fds[0], buf.as_mut_ptr() as *mut c_void, 512) };
        let line = String::from_utf8_lossy(&buf[..got as usize]).into_owned();
        assert!(line.ends_with(": bpf_trace_printk: x=42\n"), "{line:?}");
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        assert!(line.contains(&format!("-{tid:<7} [")), "{line:?}");
        // SAFETY: closing our pipe.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
