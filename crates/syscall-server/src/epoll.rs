//! Perf rings and BPF ring buffers in the loader's epoll sets.
//!
//! A ring's fd is a regular (shared-memory) file, which the kernel refuses
//! to add to an epoll set (EPERM). Perf rings are ready when they hold
//! unread records; ring buffer maps when `producer_pos != consumer_pos`
//! (the kernel's `ringbuf_map_poll_kern`), both level-triggered. The server keeps such registrations
//! itself: `epoll_ctl` on a ring fd is recorded here, and `epoll_wait` on a
//! set holding rings reports a ring ready when it has unread records,
//! merged with whatever the real epoll set reports. While nothing is ready it
//! waits on the real set in short slices (the loader is not a hot path;
//! bpftrace itself polls every 100 ms), so signals (Ctrl-C) still interrupt
//! the wait with EINTR exactly as before. A ring buffer holding only a
//! little data makes the wait pause a few microseconds first, so the traced
//! app's producers write records in batches ([`let_producers_batch`]).

use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::objects::{file_key, FileKey, Object, TABLE};
use crate::real;

/// How long one slice of a real `epoll_wait` lasts while rings are idle.
const POLL_SLICE: Duration = Duration::from_millis(5);

/// How long a loader that finds only a little data in its ring buffers
/// waits for more before it is told they are ready ([`let_producers_batch`]).
const BATCH_PAUSE: Duration = Duration::from_micros(10);

/// Below this share of a ring buffer's size (1/16), its data counts as "a
/// little" for [`let_producers_batch`].
const BATCH_SHARE: u64 = 16;

/// Gives the producers a few microseconds to add records when every ring
/// buffer of the set that holds data holds only a little of it.
///
/// Why: a consumer that keeps up reads the producer position and each new
/// record's header right after the producer wrote them, so every record
/// costs cross-core cache-line transfers in the traced app; with libbpf's
/// `ring_buffer__poll` draining one record per wakeup, the producers ran
/// at a third of their speed (7 against 21 M records/s in `cargo bench -p
/// tests --bench ringbuf`). Letting them write a batch first costs the
/// loader at most [`BATCH_PAUSE`] of latency per wait, and nothing when a
/// ring is filling up (at least 1/16 full: no pause) or when the caller
/// asked not to wait (timeout 0). The pause spins: a
/// sleep would hand the CPU back but wakes late (timer slack) and was
/// measured slower with several producers; on a single CPU it yields,
/// since spinning there would only delay the producers it waits for.
fn let_producers_batch(regs: &[Registration]) {
    let mut little = false;
    for r in regs.iter().filter(|r| r.events & libc::EPOLLIN as u32 != 0) {
        let Some(obj) = TABLE.get_key(r.ring) else { continue };
        let Object::Map(m) = &*obj else { continue };
        if m.spec.map_type != crate::abi::BPF_MAP_TYPE_RINGBUF {
            continue;
        }
        let rb = &m.map.map;
        let avail = rb.ringbuf_query(shm_maps::BPF_RB_AVAIL_DATA);
        if avail >= rb.ringbuf_query(shm_maps::BPF_RB_RING_SIZE) / BATCH_SHARE {
            return;
        }
        little |= avail > 0;
    }
    if !little {
        return;
    }
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())) < 2 {
        std::thread::yield_now();
        return;
    }
    let start = Instant::now();
    while start.elapsed() < BATCH_PAUSE {
        std::hint::spin_loop();
    }
}

#[derive(Clone, Copy)]
struct Registration {
    ring: FileKey,
    events: u32,
    data: u64,
}

static SETS: Mutex<Option<HashMap<c_int, Vec<Registration>>>> = Mutex::new(None);

/// `epoll_ctl` on a ring fd: `None` if `fd` is not one of our rings.
///
/// # Safety
/// `event` is null or the caller's `epoll_event`.
pub unsafe fn ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut libc::epoll_event,
) -> Option<Result<(), i32>> {
    let obj = TABLE.get(fd)?;
    if !is_pollable(&obj) {
        return None;
    }
    let key = file_key(fd)?;
    // SAFETY: caller contract; read only for ADD/MOD, where it is required.
    let ev = if event.is_null() {
        None
    } else {
        Some(unsafe { std::ptr::read_unaligned(event) })
    };
    let mut sets = SETS.lock().ok()?;
    let regs = sets
        .get_or_insert_with(HashMap::new)
        .entry(epfd)
        .or_default();
    let pos = regs.iter().position(|r| r.ring == key);
    Some(match op {
        libc::EPOLL_CTL_ADD => match (pos, ev) {
            (Some(_), _) => Err(libc::EEXIST),
            (None, None) => Err(libc::EFAULT),
            (None, Some(ev)) => {
                regs.push(Registration {
                    ring: key,
                    events: ev.events,
                    data: ev.u64,
                });
                Ok(())
            }
        },
        libc::EPOLL_CTL_MOD => match (pos, ev) {
            (None, _) => Err(libc::ENOENT),
            (Some(_), None) => Err(libc::EFAULT),
            (Some(i), Some(ev)) => {
                regs[i] = Registration {
                    ring: key,
                    events: ev.events,
                    data: ev.u64,
                };
                Ok(())
            }
        },
        libc::EPOLL_CTL_DEL => match pos {
            None => Err(libc::ENOENT),
            Some(i) => {
                regs.remove(i);
                Ok(())
            }
        },
        _ => Err(libc::EINVAL),
    })
}

/// Our objects the loader can wait for: perf rings and ring buffer maps.
fn is_pollable(obj: &Object) -> bool {
    match obj {
        Object::Output(_) => true,
        Object::Map(m) => m.spec.map_type == crate::abi::BPF_MAP_TYPE_RINGBUF,
        _ => false,
    }
}

/// Whether a pollable object has records to read.
fn has_data(obj: &Object) -> bool {
    match obj {
        Object::Output(o) => o.ring.has_data(),
        Object::Map(m) => m.map.map.ringbuf_query(shm_maps::BPF_RB_AVAIL_DATA) > 0,
        _ => false,
    }
}

/// Drop registrations of an epoll fd being closed.
pub fn forget_epoll_fd(fd: c_int) {
    if let Ok(mut sets) = SETS.lock() {
        if let Some(map) = sets.as_mut() {
            map.remove(&fd);
        }
    }
}

fn registrations(epfd: c_int) -> Vec<Registration> {
    SETS.lock()
        .ok()
        .and_then(|s| s.as_ref()?.get(&epfd).cloned())
        .unwrap_or_default()
}

/// Rings of `regs` that have unread records.
fn ready(regs: &[Registration]) -> Vec<libc::epoll_event> {
    regs.iter()
        .filter(|r| r.events & libc::EPOLLIN as u32 != 0)
        .filter(|r| TABLE.get_key(r.ring).as_deref().is_some_and(has_data))
        .map(|r| libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: r.data,
        })
        .collect()
}

/// # Safety
/// `events` is writable for `max` entries; `mask` (if any) is the caller's.
unsafe fn real_wait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: Option<*const libc::sigset_t>,
) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    unsafe {
        match mask {
            None => real::epoll_wait(epfd, events, max, timeout),
            Some(m) => real::epoll_pwait(epfd, events, max, timeout, m),
        }
    }
}

/// Blocks every signal for the calling thread until dropped, remembering
/// the mask to restore (and to wait with).
pub(crate) struct SignalsBlocked {
    previous: libc::sigset_t,
}

impl SignalsBlocked {
    pub(crate) fn new() -> SignalsBlocked {
        // SAFETY: sigset operations on local sets; pthread_sigmask on the
        // calling thread only.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut previous);
            SignalsBlocked { previous }
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restoring the mask saved by `new` on the same thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

/// `epoll_wait`/`epoll_pwait` with our rings merged in.
///
/// # Safety
/// Same contract as `epoll_wait`.
pub unsafe fn wait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: Option<*const libc::sigset_t>,
) -> c_int {
    let regs = registrations(epfd);
    if regs.is_empty() || max <= 0 || events.is_null() {
        // SAFETY: forwarding.
        return unsafe { real_wait(epfd, events, max, timeout, mask) };
    }
    let blocked = SignalsBlocked::new();
    // The mask to wait with: the caller's (epoll_pwait) or the one in force
    // before we blocked everything (epoll_wait).
    let wait_mask: *const libc::sigset_t = match mask {
        Some(m) if !m.is_null() => m,
        _ => &blocked.previous,
    };
    let deadline = (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
    // One ring buffer alone in the set (libbpf's `ring_buffer__new` makes
    // such a set): sleep on its producers' futex, so a record wakes the
    // loader at once instead of at the next slice (producers only make that
    // FUTEX_WAKE while a consumer sleeps, and the real set is still checked
    // every slice).
    let lone_ring = match regs.as_slice() {
        [r] if r.events & libc::EPOLLIN as u32 != 0 => TABLE
            .get_key(r.ring)
            .filter(|o| matches!(&**o, Object::Map(m) if m.spec.map_type == crate::abi::BPF_MAP_TYPE_RINGBUF)),
        _ => None,
    };
    if timeout != 0 {
        let_producers_batch(&regs);
    }
    loop {
        let ours = ready(&regs);
        if !ours.is_empty() {
            let n = ours.len().min(max as usize);
            // SAFETY: `events` has room for `max` >= n entries.
            unsafe { std::ptr::copy_nonoverlapping(ours.as_ptr(), events, n) };
            let mut total = n as c_int;
            if total < max {
                // SAFETY: the remaining `max - n` entries of the caller's buffer.
                let r = unsafe { real_wait(epfd, events.add(n), max - total, 0, Some(wait_mask)) };
                if r > 0 {
                    total += r;
                }
            }
            return total;
        }
        let slice = match deadline {
            None => POLL_SLICE,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return 0;
                }
                (d - now).min(POLL_SLICE)
            }
        };
        if let Some(Object::Map(m)) = lone_ring.as_deref() {
            // SAFETY: forwarding with no timeout; pending signals are
            // delivered (EINTR) as this call unblocks them.
            let r = unsafe { real_wait(epfd, events, max, 0, Some(wait_mask)) };
            if r != 0 {
                return r;
            }
            m.map.map.ringbuf_wait_readable(Some(slice));
            continue;
        }
        // SAFETY: forwarding with a bounded timeout; signals pending since
        // we blocked them are delivered (EINTR) as this wait unblocks them.
        let r = unsafe {
            real_wait(
                epfd,
                events,
                max,
                slice.as_millis().max(1) as c_int,
                Some(wait_mask),
            )
        };
        if r != 0 {
            // Real events, or an error such as EINTR. errno is preserved
            // across the mask restore (pthread_sigmask does not set it on success).
            return r;
        }
    }
}
