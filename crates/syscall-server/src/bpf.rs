//! `syscall(__NR_bpf, cmd, attr, size)`: every command a loader issues,
//! answered from the registry. Each handler returns `Ok(value)` (an fd or 0)
//! or `Err(errno)` with the errno the kernel would use.
//!
//! Unsupported commands fail with the kernel's "not supported" errno and a
//! one-line message naming the command; nothing is passed to the kernel.

use std::ffi::c_long;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::Arc;

use crate::abi::{self, attr, Attr};
use crate::backend;
use crate::objects::{ForeignObject, LinkObject, MapObject, Object, ProgObject, TABLE};
use crate::report;

/// Largest program the server accepts (the kernel's `BPF_COMPLEXITY_LIMIT_INSNS`).
const MAX_INSNS: u32 = 1_000_000;

/// Entry point from the `syscall` interposer.
///
/// # Safety
/// `attr_ptr` is the caller's `bpf_attr` of `size` bytes (as for the kernel).
pub unsafe fn bpf(cmd: u32, attr_ptr: *mut u8, size: u32) -> Result<c_long, i32> {
    // SAFETY: forwarded caller contract.
    let a = unsafe { Attr::from_user(attr_ptr, size as usize)? };
    match cmd {
        abi::BPF_MAP_CREATE => map_create(&a),
        abi::BPF_MAP_LOOKUP_ELEM => map_elem(&a, ElemOp::Lookup),
        abi::BPF_MAP_UPDATE_ELEM => map_elem(&a, ElemOp::Update),
        abi::BPF_MAP_DELETE_ELEM => map_elem(&a, ElemOp::Delete),
        abi::BPF_MAP_GET_NEXT_KEY => map_elem(&a, ElemOp::NextKey),
        abi::BPF_MAP_LOOKUP_AND_DELETE_ELEM => map_elem(&a, ElemOp::LookupAndDelete),
        abi::BPF_MAP_FREEZE => map_freeze(&a),
        abi::BPF_PROG_LOAD => prog_load(&a),
        // SAFETY: attr_ptr is the caller's writable attr.
        abi::BPF_PROG_TEST_RUN => unsafe { prog_test_run(&a, attr_ptr) },
        // SAFETY: as above.
        abi::BPF_OBJ_GET_INFO_BY_FD => unsafe { obj_get_info(&a, attr_ptr) },
        // Programs and maps are listed from the registry (bpftool prog/map
        // show). userbpf exposes no kernel BTF, so BTF iteration ends at
        // once, which loaders read as "no kernel BTF objects"; links are
        // not listed by id.
        // SAFETY: attr_ptr is the caller's writable attr.
        abi::BPF_PROG_GET_NEXT_ID => unsafe { next_id(&a, attr_ptr, backend::registry()?.prog_ids()) },
        // SAFETY: as above.
        abi::BPF_MAP_GET_NEXT_ID => unsafe { next_id(&a, attr_ptr, backend::registry()?.map_ids()) },
        abi::BPF_PROG_GET_FD_BY_ID => fd_by_id(ForeignObject::Prog(a.u32(attr::ID_START))),
        abi::BPF_MAP_GET_FD_BY_ID => fd_by_id(ForeignObject::Map(a.u32(attr::ID_START))),
        // SAFETY: as above.
        abi::BPF_LINK_GET_NEXT_ID => unsafe { next_id(&a, attr_ptr, backend::registry()?.link_ids()) },
        abi::BPF_LINK_GET_FD_BY_ID => fd_by_id(ForeignObject::Link(a.u32(attr::ID_START))),
        abi::BPF_BTF_GET_NEXT_ID => Err(libc::ENOENT),
        abi::BPF_BTF_GET_FD_BY_ID => Err(libc::ENOENT),
        abi::BPF_BTF_LOAD => btf_load(&a),
        abi::BPF_LINK_CREATE => link_create(&a),
        abi::BPF_LINK_UPDATE => link_update(&a),
        abi::BPF_LINK_DETACH => link_detach(&a),
        abi::BPF_RAW_TRACEPOINT_OPEN => {
            report::unsupported(
                "kernel raw tracepoints (BPF_RAW_TRACEPOINT_OPEN)",
                "userbpf traces user space only",
            );
            Err(libc::EOPNOTSUPP)
        }
        abi::BPF_PROG_BIND_MAP => Ok(0),
        // Batch map operations are an optimisation loaders probe for and do
        // without (bpftrace prints maps element by element when they fail):
        // refused quietly, as by a kernel older than 5.6 (USERBPF_TRACE shows it).
        abi::BPF_MAP_LOOKUP_BATCH..=abi::BPF_MAP_DELETE_BATCH => Err(libc::EINVAL),
        // BPF tokens delegate kernel BPF rights from a bpffs mount; the
        // server grants its loader everything already. This is the answer
        // of a kernel whose bpffs has no delegation set up (EINVAL), after
        // which libbpf and bpftrace carry on without a token.
        abi::BPF_TOKEN_CREATE => Err(libc::EINVAL),
        _ => {
            report::unsupported(
                abi::bpf_cmd_name(cmd),
                "this bpf() command is not implemented by userbpf",
            );
            Err(libc::EINVAL)
        }
    }
}

fn map_create(a: &Attr) -> Result<c_long, i32> {
    let spec = backend::MapSpec {
        map_type: a.u32(attr::MAP_TYPE),
        key_size: a.u32(attr::KEY_SIZE),
        value_size: a.u32(attr::VALUE_SIZE),
        max_entries: a.u32(attr::MAX_ENTRIES),
        map_flags: a.u32(attr::MAP_FLAGS),
        map_extra: a.u64(attr::MAP_EXTRA),
        name: a.name(attr::MAP_NAME),
    };
    if a.u32(attr::INNER_MAP_FD) != 0 {
        report::unsupported("maps of maps", "userbpf has no map-in-map support");
        return Err(libc::EINVAL);
    }
    // A cgroup array holds cgroup fds that only `bpf_current_task_under_cgroup`
    // (and `bpf_skb_under_cgroup`) read; userbpf implements neither, so the
    // verifier refuses every program that could use one. libbpf tools still
    // create it unconditionally (funclatency's `cgroup_map`, used only with
    // `-c`): keep it in the registry as an ARRAY of u32 that nothing reads,
    // and refuse syscall-side stores into it (see `map_elem`).
    let registry_spec = if spec.map_type == abi::BPF_MAP_TYPE_CGROUP_ARRAY {
        if spec.key_size != 4
            || spec.value_size != 4
            || spec.max_entries == 0
            || spec.map_flags != 0
        {
            return Err(libc::EINVAL); // the kernel's fd-array rules
        }
        backend::MapSpec {
            map_type: abi::BPF_MAP_TYPE_ARRAY,
            ..spec.clone()
        }
    } else {
        spec.clone()
    };
    let (map, fd) = backend::create_map(&registry_spec)?;
    let fd = fd.into_raw_fd();
    register(
        fd,
        Object::Map(MapObject {
            map,
            spec,
            frozen: Default::default(),
        }),
    )
}

/// `BPF_MAP_FREEZE`: from now on the loader cannot change the map through
/// the syscall (EPERM) nor map it writable. A frozen `BPF_F_RDONLY_PROG`
/// array (libbpf's `.rodata`) is constant for programs: the verifier reads
/// its contents and decides branches on them, as the kernel does.
fn map_freeze(a: &Attr) -> Result<c_long, i32> {
    let obj = map_of(a.u32(attr::ELEM_MAP_FD))?;
    let Object::Map(m) = &*obj else {
        unreachable!("map_of returns maps only")
    };
    if m.frozen.swap(true, std::sync::atomic::Ordering::AcqRel) {
        // The kernel checks write permission first, which a frozen map no
        // longer grants: a second freeze fails with EPERM (measured).
        return Err(libc::EPERM);
    }
    Ok(0)
}

/// Register `object` behind `fd` and hand `fd` to the caller.
fn register(fd: RawFd, object: Object) -> Result<c_long, i32> {
    match TABLE.insert(fd, object) {
        Ok(_) => Ok(fd as c_long),
        Err(e) => {
            // SAFETY: fd is ours and not yet handed out.
            unsafe { crate::real::close(fd) };
            Err(e)
        }
    }
}

/// The map behind `fd`, EBADF if not open, EINVAL if not a map (as the kernel).
pub fn map_of(fd: u32) -> Result<Arc<Object>, i32> {
    let obj = TABLE.get(fd as RawFd).ok_or(libc::EBADF)?;
    match &*obj {
        Object::Map(_) => Ok(obj),
        _ => Err(libc::EINVAL),
    }
}

#[derive(Clone, Copy)]
enum ElemOp {
    Lookup,
    Update,
    Delete,
    NextKey,
    LookupAndDelete,
}

/// `len` bytes of the loader's memory at `ptr` (EFAULT for a bad pointer).
///
/// # Safety
/// As [`crate::uaccess::read`].
pub(crate) unsafe fn user_bytes(ptr: u64, len: usize) -> Result<Vec<u8>, i32> {
    // SAFETY: forwarded.
    unsafe { crate::uaccess::read(ptr, len) }
}

/// `cnt` u64s of user memory at `ptr` (uprobe_multi arrays).
///
/// # Safety
/// As [`user_bytes`].
unsafe fn user_u64s(ptr: u64, cnt: usize) -> Result<Vec<u64>, i32> {
    // SAFETY: forwarded.
    let bytes = unsafe { user_bytes(ptr, cnt * 8)? };
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Copy `data` into the loader's memory at `ptr` (EFAULT for a bad pointer).
///
/// # Safety
/// As [`crate::uaccess::write`].
unsafe fn to_user(ptr: u64, data: &[u8]) -> Result<(), i32> {
    // SAFETY: forwarded.
    unsafe { crate::uaccess::write(ptr, data) }
}

fn map_elem(a: &Attr, op: ElemOp) -> Result<c_long, i32> {
    let obj = map_of(a.u32(attr::ELEM_MAP_FD))?;
    let Object::Map(m) = &*obj else {
        unreachable!("map_of returns maps only")
    };
    let key_size = m.spec.key_size as usize;
    let user_value_size = m.map.user_value_size();
    let key_ptr = a.u64(attr::ELEM_KEY);
    let value_ptr = a.u64(attr::ELEM_VALUE);
    if m.spec.map_type == abi::BPF_MAP_TYPE_CGROUP_ARRAY {
        return cgroup_array_elem(a, op);
    }
    if m.is_frozen()
        && matches!(
            op,
            ElemOp::Update | ElemOp::Delete | ElemOp::LookupAndDelete
        )
    {
        return Err(libc::EPERM); // the kernel's answer for a frozen map
    }
    // SAFETY (for every user_bytes/to_user below): the pointers come from the
    // loader's bpf_attr and are sized by the map's key/value sizes, exactly
    // what the kernel would copy.
    match op {
        ElemOp::Lookup | ElemOp::LookupAndDelete => {
            let key = unsafe { user_bytes(key_ptr, key_size)? };
            let mut out = vec![0u8; user_value_size];
            if matches!(op, ElemOp::Lookup) {
                m.map.lookup(&key, &mut out)?;
            } else {
                m.map.lookup_and_delete(&key, &mut out)?;
            }
            unsafe { to_user(value_ptr, &out)? };
            Ok(0)
        }
        ElemOp::Update => {
            let key = unsafe { user_bytes(key_ptr, key_size)? };
            let mut value = unsafe { user_bytes(value_ptr, user_value_size)? };
            let flags = a.u64(attr::ELEM_FLAGS);
            if m.spec.map_type == abi::BPF_MAP_TYPE_PERF_EVENT_ARRAY {
                // The loader stores a perf event fd; agents need the ring id.
                let fd = u32::from_ne_bytes(value[..4].try_into().map_err(|_| libc::EINVAL)?);
                let ev = TABLE.get(fd as RawFd).ok_or(libc::EBADF)?;
                let Object::Output(out) = &*ev else {
                    report::unsupported(
                        "perf event arrays holding non-BPF_OUTPUT events",
                        "only PERF_COUNT_SW_BPF_OUTPUT events can receive bpf_perf_event_output",
                    );
                    return Err(libc::EOPNOTSUPP);
                };
                value[..4].copy_from_slice(&out.ring.id().to_ne_bytes());
                out.published
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            m.map.update(&key, &value, flags)?;
            Ok(0)
        }
        ElemOp::Delete => {
            let key = unsafe { user_bytes(key_ptr, key_size)? };
            m.map.delete(&key)?;
            Ok(0)
        }
        ElemOp::NextKey => {
            let key = if key_ptr == 0 {
                None
            } else {
                Some(unsafe { user_bytes(key_ptr, key_size)? })
            };
            let mut next = vec![0u8; key_size];
            m.map.get_next_key(key.as_deref(), &mut next)?;
            unsafe { to_user(value_ptr, &next)? };
            Ok(0)
        }
    }
}

/// Element operations on a `CGROUP_ARRAY` (see `map_create`): it never holds
/// anything. Lookups fail like the kernel's (ENOTSUPP: cgroup arrays are
/// not readable from the syscall); deletes find nothing (ENOENT); storing a cgroup fails loudly, since no
/// program could use it.
fn cgroup_array_elem(a: &Attr, op: ElemOp) -> Result<c_long, i32> {
    match op {
        // The kernel's fd arrays without a syscall view: ENOTSUPP (524).
        ElemOp::Lookup | ElemOp::LookupAndDelete => Err(abi::ENOTSUPP),
        ElemOp::Delete => Err(libc::ENOENT),
        ElemOp::NextKey => {
            let obj = map_of(a.u32(attr::ELEM_MAP_FD))?;
            let Object::Map(m) = &*obj else {
                unreachable!("map_of returns maps only")
            };
            let key_ptr = a.u64(attr::ELEM_KEY);
            let key = if key_ptr == 0 {
                None
            } else {
                // SAFETY: the loader's 4-byte key.
                Some(unsafe { user_bytes(key_ptr, 4)? })
            };
            let mut next = [0u8; 4];
            m.map.get_next_key(key.as_deref(), &mut next)?;
            // SAFETY: the loader's 4-byte next-key buffer.
            unsafe { to_user(a.u64(attr::ELEM_VALUE), &next)? };
            Ok(0)
        }
        ElemOp::Update => {
            report::unsupported(
                "cgroup filters (storing a cgroup in a BPF_MAP_TYPE_CGROUP_ARRAY)",
                "userbpf has no bpf_current_task_under_cgroup helper",
            );
            Err(libc::EOPNOTSUPP)
        }
    }
}

fn prog_load(a: &Attr) -> Result<c_long, i32> {
    let prog_type = a.u32(attr::PROG_TYPE);
    let insn_cnt = a.u32(attr::INSN_CNT);
    let name = a.name(attr::PROG_NAME);
    if insn_cnt == 0 || insn_cnt > MAX_INSNS {
        return Err(if insn_cnt == 0 {
            libc::EINVAL
        } else {
            libc::E2BIG
        });
    }
    // SAFETY: the loader passes `insn_cnt` 8-byte instructions at `insns`.
    let raw = unsafe { user_bytes(a.u64(attr::INSNS), insn_cnt as usize * 8)? };
    let mut insns: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect();

    let log = LogBuf {
        level: a.u32(attr::LOG_LEVEL),
        size: a.u32(attr::LOG_SIZE),
        ptr: a.u64(attr::LOG_BUF),
    };
    if log.level != 0 && (log.size < 128 || log.ptr == 0) {
        return Err(libc::EINVAL); // the kernel's rule for a too small log buffer
    }
    if !crate::verify::prog_type_supported(prog_type) {
        let kind = abi::program_kind_name(prog_type, a.u32(attr::EXPECTED_ATTACH_TYPE));
        let why = "userbpf runs uprobe (kprobe-type), perf_event and raw_tracepoint programs only";
        log.write(&format!("userbpf: program type {kind} ({prog_type}) is not supported: {why}\n"));
        // Only in the log: loaders probe program types (bpftrace's fentry
        // and iter probes at every start, libbpf's feature probes) and carry
        // on without them; libbpf prints the log when a tool's program fails.
        return Err(libc::EINVAL);
    }

    // Function and line information, checked as the kernel's check_btf_info.
    let btf = match crate::btf_info::from_load(a, &insns) {
        Ok(b) => b,
        Err((errno, line)) => {
            // The kernel's message (its own line ends, or none), then the
            // verifier's summary of nothing processed.
            log.write(&format!("{}{}\n", line.unwrap_or_default(), verifier::nothing_processed_line()));
            return Err(errno);
        }
    };

    // Kernel functions are named by the running kernel's BTF ids.
    if let Err(why) = crate::kfunc::resolve(&mut insns) {
        log.write(&format!("{why}\n"));
        if report::tracing() {
            report::line(&format!("userbpf trace: program {name:?} refused: {why}"));
        }
        return Err(libc::EINVAL);
    }

    // Find the maps the program references: lddw with a map-fd pseudo
    // source carries the loader's fd.
    let mut maps: Vec<crate::verify::MapRef> = Vec::new();
    let mut map_objects = Vec::new();
    let mut lddw_fds = Vec::new();
    let mut pc = 0;
    while pc < insns.len() {
        let insn = insns[pc];
        if insn as u8 == 0x18 {
            let src = ((insn >> 12) & 0xf) as u8;
            if src == abi::BPF_PSEUDO_MAP_FD || src == abi::BPF_PSEUDO_MAP_VALUE {
                let fd = (insn >> 32) as u32;
                let obj = match map_of(fd) {
                    Ok(o) => o,
                    Err(e) => {
                        log.write(&format!("fd {fd} is not pointing to valid bpf_map\n"));
                        return Err(e);
                    }
                };
                let Object::Map(m) = &*obj else {
                    unreachable!("map_of returns maps only")
                };
                if !maps.iter().any(|r| r.fd == fd) {
                    maps.push(crate::verify::MapRef {
                        fd,
                        id: m.map.id(),
                        spec: m.spec.clone(),
                        constant_value: constant_value_of(m),
                    });
                    map_objects.push(obj.clone());
                }
                lddw_fds.push((pc, fd));
            } else if src == abi::BPF_PSEUDO_MAP_IDX || src == abi::BPF_PSEUDO_MAP_IDX_VALUE {
                report::unsupported(
                    "fd_array map references (BPF_PSEUDO_MAP_IDX)",
                    "pass map fds in lddw instead",
                );
                return Err(libc::EINVAL);
            }
            pc += 2;
        } else {
            pc += 1;
        }
    }

    // Every program is verified before it is accepted.
    let verdict = crate::verify::verify(prog_type, &insns, &maps, log.level);
    log.write(&verdict.log);
    verdict.result?;
    if !verdict.skipped {
        crate::verify::sanitize_dead_helper_calls(&mut insns);
    }

    // The registry program names maps by registry id.
    for (pc, fd) in lddw_fds {
        let id = maps
            .iter()
            .find(|r| r.fd == fd)
            .map(|r| r.id)
            .expect("collected above");
        insns[pc] = (insns[pc] & 0xffff_ffff) | ((id as u64) << 32);
    }
    let mut map_ids: Vec<u32> = maps.iter().map(|m| m.id).collect();
    map_ids.sort_unstable();
    map_ids.dedup();
    // SAFETY: `license` is the loader's NUL-terminated license string.
    let license = unsafe { user_cstr(a.u64(attr::LICENSE))? };
    let (prog, fd) = backend::store_program(backend::ProgSpec {
        prog_type,
        expected_attach_type: a.u32(attr::EXPECTED_ATTACH_TYPE),
        prog_flags: a.u32(attr::PROG_FLAGS),
        kern_version: a.u32(attr::KERN_VERSION),
        name: &name,
        license: &license,
        insns: &insns,
        maps: map_objects,
        map_ids: map_ids.clone(),
        verifier_log: verdict.log,
    })?;
    let fd = fd.into_raw_fd();
    let id = prog.id;
    // Verified is not enough: the runtime must be able to run it, or the
    // loader would attach a probe that silently never fires.
    if let Err(why) = crate::loader_run::preflight(id) {
        // The runtime names the program by its (fresh) id: key on the rest.
        let reason = why.strip_prefix(&format!("program {id}: ")).unwrap_or(&why);
        let msg = format!("userbpf: program {name:?} cannot run: {reason}\n");
        report::once(&format!("cannot run {name}: {reason}"), msg.trim_end());
        log.write(&msg);
        // SAFETY: fd is ours, not handed out; dropping `prog` removes the record.
        unsafe { crate::real::close(fd) };
        return Err(libc::EINVAL);
    }
    register(
        fd,
        Object::Prog(ProgObject {
            prog,
            id,
            prog_type,
            expected_attach_type: a.u32(attr::EXPECTED_ATTACH_TYPE),
            name,
            insn_count: insn_cnt,
            map_ids,
            btf,
        }),
    )
}

/// What the `mmap` interposer does with one of our fds.
pub enum MmapAnswer {
    /// Map the fd itself at this file offset.
    Offset(i64),
    /// Already mapped here (ring buffers, whose layout maps a part of the
    /// file twice).
    Mapped(*mut u8),
}

/// An `mmap` of one of our fds, or the kernel's errno. Perf rings: see
/// [`crate::perf::prepare_ring_mmap`]. Maps (the kernel's `bpf_map_mmap`):
/// private mappings EINVAL; ring buffers as
/// [`shm_maps::Map::ringbuf_mmap_for_loader`]; arrays only with
/// `BPF_F_MMAPABLE` (EINVAL otherwise), and a frozen one not writable
/// (EPERM); other map types ENODEV.
/// The values of an array start at a page boundary of the map file, after
/// the registry's header: the loader's offset is relative to them.
pub fn prepare_mmap(
    fd: RawFd,
    obj: &Object,
    req: MmapRequest,
) -> Result<MmapAnswer, i32> {
    let MmapRequest { addr, len, prot, flags, off } = req;
    match obj {
        Object::Output(_) => {
            crate::perf::prepare_ring_mmap(fd, obj, len).map(|()| MmapAnswer::Offset(off))
        }
        Object::Map(m) => {
            if flags & libc::MAP_SHARED == 0 {
                return Err(libc::EINVAL); // the kernel maps maps shared only
            }
            if m.spec.map_type == abi::BPF_MAP_TYPE_RINGBUF {
                if off < 0 {
                    return Err(libc::EINVAL);
                }
                let fixed = (flags & libc::MAP_FIXED != 0).then_some(addr);
                return m
                    .map
                    .map
                    .ringbuf_mmap_for_loader(off as usize, len, prot, fixed)
                    .map(MmapAnswer::Mapped)
                    .map_err(|e| e.0);
            }
            if m.spec.map_type != abi::BPF_MAP_TYPE_ARRAY {
                report::unsupported(
                    &format!("mmap of a map of type {}", m.spec.map_type),
                    "only BPF_F_MMAPABLE arrays and ring buffers can be mapped",
                );
                return Err(libc::ENODEV);
            }
            if m.spec.map_flags & shm_maps::map_flags::BPF_F_MMAPABLE == 0 {
                return Err(libc::EINVAL);
            }
            if m.is_frozen() && prot & libc::PROT_WRITE != 0 {
                return Err(libc::EPERM);
            }
            let values = array_values_file_offset(&m.map.map).ok_or_else(|| {
                report::line("userbpf: cannot locate an array map's values in its file");
                libc::EIO
            })?;
            Ok(MmapAnswer::Offset(off + values as i64))
        }
        _ => Err(libc::ENODEV),
    }
}

/// The arguments of the loader's `mmap` call.
#[derive(Clone, Copy)]
pub struct MmapRequest {
    pub addr: *mut u8,
    pub len: usize,
    pub prot: i32,
    pub flags: i32,
    pub off: i64,
}

/// File offset of element 0 of an array map's values, found through this
/// process's own mapping of the map file (`/proc/self/maps` gives the file
/// offset of the mapping that holds the value's address).
fn array_values_file_offset(map: &shm_maps::Map) -> Option<u64> {
    let addr = map.array_value_ptr(0)? as u64;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (range, _perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
        let (start, end) = range.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        if (start..end).contains(&addr) {
            let file_off = u64::from_str_radix(offset, 16).ok()? + (addr - start);
            // mmap offsets must be page-aligned: the registry puts values on a page.
            return (file_off % 4096 == 0).then_some(file_off);
        }
    }
    None
}

/// Element 0 of a frozen array that programs may only read (libbpf's
/// `.rodata`): its contents can no longer change, so the verifier may treat
/// them as constants.
fn constant_value_of(m: &MapObject) -> Option<Vec<u8>> {
    if m.spec.map_type != abi::BPF_MAP_TYPE_ARRAY
        || m.spec.map_flags & abi::BPF_F_RDONLY_PROG == 0
        || !m.is_frozen()
    {
        return None;
    }
    let mut value = vec![0u8; m.map.user_value_size()];
    m.map.lookup(&0u32.to_ne_bytes(), &mut value).ok()?;
    Some(value)
}

/// A NUL-terminated string from the loader (empty for null).
///
/// # Safety
/// `ptr` is null or a NUL-terminated string.
unsafe fn user_cstr(ptr: u64) -> Result<String, i32> {
    if ptr == 0 {
        return Ok(String::new());
    }
    // SAFETY: forwarded; a bad pointer gives EFAULT.
    let bytes = unsafe { crate::uaccess::read_cstr(ptr, 4095)? };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The loader's verifier log buffer.
struct LogBuf {
    level: u32,
    size: u32,
    ptr: u64,
}

impl LogBuf {
    /// Write `text` NUL-terminated, truncated to the buffer (as the kernel).
    fn write(&self, text: &str) {
        if self.level == 0 || self.ptr == 0 || self.size == 0 || text.is_empty() {
            return;
        }
        let n = text.len().min(self.size as usize - 1);
        let mut bytes = text.as_bytes()[..n].to_vec();
        bytes.push(0);
        // SAFETY: the loader's log buffer of `size` bytes; a bad one is
        // skipped (the load's own answer stands).
        let _ = unsafe { crate::uaccess::write(self.ptr, &bytes) };
    }
}

/// The program behind `fd`.
pub fn prog_of(fd: u32) -> Result<Arc<Object>, i32> {
    let obj = TABLE.get(fd as RawFd).ok_or(libc::EBADF)?;
    match &*obj {
        Object::Prog(_) => Ok(obj),
        _ => Err(libc::EINVAL),
    }
}

/// # Safety
/// `attr_ptr` is the caller's writable attr.
unsafe fn prog_test_run(a: &Attr, attr_ptr: *mut u8) -> Result<c_long, i32> {
    let obj = prog_of(a.u32(attr::TEST_PROG_FD))?;
    let Object::Prog(p) = &*obj else {
        unreachable!()
    };
    if p.prog_type != abi::BPF_PROG_TYPE_RAW_TRACEPOINT {
        report::unsupported(
            &format!(
                "BPF_PROG_TEST_RUN of {} programs",
                abi::prog_type_name(p.prog_type)
            ),
            "only raw_tracepoint programs (BEGIN/END) can be test-run",
        );
        return Err(abi::ENOTSUPP);
    }
    if a.u32(attr::TEST_DATA_SIZE_IN) != 0 {
        return Err(libc::EINVAL); // raw_tracepoint test runs take no data, as in the kernel
    }
    let ctx_size = a.u32(attr::TEST_CTX_SIZE_IN) as usize;
    let mut ctx = vec![0u8; crate::loader_run::RAW_TP_CTX_SIZE];
    if ctx_size > ctx.len() {
        return Err(libc::EINVAL);
    }
    if ctx_size > 0 {
        // SAFETY: the loader passes ctx_size_in bytes at ctx_in.
        let user = unsafe { user_bytes(a.u64(attr::TEST_CTX_IN), ctx_size)? };
        ctx[..ctx_size].copy_from_slice(&user);
    }
    let start = std::time::Instant::now();
    // SAFETY: `ctx` is a RAW_TP_CTX_SIZE buffer, the raw-tracepoint context size.
    let r0 = unsafe { crate::loader_run::run_program(p.id, ctx.as_mut_ptr())? };
    let ns = start.elapsed().as_nanos().min(u32::MAX as u128) as u32;
    // SAFETY: writing result fields inside the caller's attr.
    unsafe {
        abi::write_attr_u32(attr_ptr, attr::TEST_RETVAL, r0 as u32);
        abi::write_attr_u32(attr_ptr, attr::TEST_DURATION, ns);
    }
    Ok(0)
}

/// `struct bpf_map_info` (88 bytes): type, id, key_size, value_size,
/// max_entries, map_flags, name[16], then no ifindex, netns or BTF.
fn map_info_bytes(info: &mut Vec<u8>, spec: &backend::MapSpec, id: u32) {
    for v in [spec.map_type, id, spec.key_size, spec.value_size, spec.max_entries, spec.map_flags] {
        info.extend_from_slice(&v.to_ne_bytes());
    }
    info.extend_from_slice(&name16(&spec.name));
    info.resize(88, 0);
}

/// A name as the kernel stores it: at most 15 bytes and a NUL in 16.
fn name16(s: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    let n = s.len().min(15);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    b
}

/// The kernel's program tag (`bpf_prog_calc_tag`): the first 8 bytes of
/// the SHA-256 of the instructions with the immediates of map loads
/// zeroed, so the tag does not depend on fd numbers (or here, registry
/// ids). Linux 6.18 hashes with SHA-256 (checked as root: `r0 = 0; exit`
/// has tag 59f4a931744dcdc6); older kernels used SHA-1, so tags of the
/// same program differ between kernels too.
pub fn prog_tag(insns: &[u8]) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let mut words: Vec<[u8; 8]> = insns
        .chunks_exact(8)
        .map(|c| c.try_into().expect("8 bytes"))
        .collect();
    let mut i = 0;
    while i < words.len() {
        let src = words[i][1] >> 4;
        if words[i][0] == 0x18 && (src == abi::BPF_PSEUDO_MAP_FD || src == abi::BPF_PSEUDO_MAP_VALUE) {
            words[i][4..].fill(0);
            if let Some(next) = words.get_mut(i + 1) {
                next[4..].fill(0);
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    let digest = Sha256::digest(words.concat());
    digest[..8].try_into().expect("8 bytes")
}

/// Whether the kernel would call `license` GPL-compatible (`license_is_gpl_compatible`).
fn gpl_compatible(license: &str) -> bool {
    matches!(
        license,
        "GPL" | "GPL v2" | "GPL and additional rights" | "Dual BSD/GPL" | "Dual MIT/GPL" | "Dual MPL/GPL"
    )
}

/// `struct bpf_prog_info` (232 bytes) of a registry program: type, id,
/// tag, `xlated_prog_len` (the stored instructions, map loads naming
/// registry map ids as the kernel's dump names map ids), `created_by_uid`,
/// `nr_map_ids`, name, `gpl_compatible`, `verified_insns`. As in the
/// kernel, the instructions and map ids are copied into the caller's
/// `xlated_prog_insns`/`map_ids` buffers when given, up to the lengths the
/// caller said they hold; the full lengths are reported either way. The
/// program runs JIT-compiled in the apps, not here, so `jited_prog_len` is 0.
///
/// # Safety
/// `a` is an OBJ_GET_INFO_BY_FD attr whose buffer pointers are the loader's.
unsafe fn prog_info_bytes(
    a: &Attr,
    p: &shm_maps::ProgRecord,
    info: &mut Vec<u8>,
    btf: Option<&crate::btf_info::BtfInfo>,
) -> Result<(), i32> {
    const SIZE: usize = 232;
    let user_len = (a.u32(attr::INFO_LEN) as usize).min(SIZE);
    // SAFETY: the loader gave `info_len` readable bytes at `info`.
    let given = unsafe { user_bytes(a.u64(attr::INFO_PTR), user_len)? };
    let u32_at = |o: usize| given.get(o..o + 4).map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4")));
    let u64_at = |o: usize| given.get(o..o + 8).map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8")));
    info.resize(SIZE, 0);
    let put32 = |info: &mut Vec<u8>, o: usize, v: u32| info[o..o + 4].copy_from_slice(&v.to_ne_bytes());
    put32(info, 0, p.prog_type);
    put32(info, 4, p.id);
    info[8..16].copy_from_slice(&prog_tag(&p.insns));
    put32(info, 20, p.insns.len() as u32);
    // The caller's buffer pointers stay as given (the kernel leaves them).
    info[24..40].copy_from_slice(&given.get(24..40).map_or([0; 16], |b| b.try_into().unwrap_or([0; 16])));
    // SAFETY: getuid has no preconditions.
    put32(info, 48, unsafe { libc::getuid() });
    put32(info, 52, p.map_ids.len() as u32);
    info[56..64].copy_from_slice(&u64_at(56).to_ne_bytes());
    info[64..80].copy_from_slice(&name16(&p.name));
    put32(info, 84, gpl_compatible(&p.license) as u32);
    put32(info, 216, (p.insns.len() / 8) as u32);
    let xlated = u64_at(32);
    if xlated != 0 {
        let n = (u32_at(20) as usize).min(p.insns.len());
        // SAFETY: the caller's buffer of `xlated_prog_len` bytes.
        unsafe { to_user(xlated, &p.insns[..n])? };
    }
    let ids = u64_at(56);
    if ids != 0 {
        let n = (u32_at(52) as usize).min(p.map_ids.len());
        let bytes: Vec<u8> = p.map_ids[..n].iter().flat_map(|i| i.to_ne_bytes()).collect();
        // SAFETY: the caller's array of `nr_map_ids` u32s.
        unsafe { to_user(ids, &bytes)? };
    }
    // BTF function and line information, as bpf_prog_get_info_by_fd: the
    // caller's record sizes must be the kernel's when it asks for records;
    // as many records as both sides have are copied; the counts and the
    // kernel's record sizes are reported.
    use crate::btf_info::{FUNC_INFO_SIZE, LINE_INFO_SIZE};
    let (want_funcs, func_rec) = (u32_at(144), u32_at(132));
    let (want_lines, line_rec) = (u32_at(148), u32_at(172));
    let (want_jited, jited_rec) = (u32_at(168), u32_at(176));
    if ((want_funcs != 0 || func_rec != 0) && func_rec as usize != FUNC_INFO_SIZE)
        || ((want_lines != 0 || line_rec != 0) && line_rec as usize != LINE_INFO_SIZE)
        || ((want_jited != 0 || jited_rec != 0) && jited_rec != 8)
    {
        return Err(libc::EINVAL);
    }
    put32(info, 132, FUNC_INFO_SIZE as u32);
    put32(info, 172, LINE_INFO_SIZE as u32);
    put32(info, 176, 8);
    info[136..144].copy_from_slice(&u64_at(136).to_ne_bytes());
    info[152..168].copy_from_slice(&given.get(152..168).map_or([0; 16], |b| b.try_into().unwrap_or([0; 16])));
    if let Some(b) = btf {
        put32(info, 128, b.btf_id);
        put32(info, 144, b.nr_func_info());
        put32(info, 148, b.nr_line_info());
        let n = want_funcs.min(b.nr_func_info()) as usize;
        if n > 0 {
            // SAFETY: the caller's array of `nr_func_info` records.
            unsafe { to_user(u64_at(136), &b.func_info[..n * FUNC_INFO_SIZE])? };
        }
        let n = want_lines.min(b.nr_line_info()) as usize;
        if n > 0 {
            // SAFETY: the caller's array of `nr_line_info` records.
            unsafe { to_user(u64_at(152), &b.line_info[..n * LINE_INFO_SIZE])? };
        }
    }
    Ok(())
}

/// `bpf_link_info` of a registry attachment, as the kernel describes a
/// perf-event link on a uprobe: type `BPF_LINK_TYPE_PERF_EVENT`, id,
/// prog_id, then `perf_event.type` (uprobe 1, uretprobe 2) and
/// `perf_event.uprobe` (`file_name` filled when given, `name_len`, `offset`,
/// `cookie`). Other attachments (timers) report only the first three.
///
/// # Safety
/// `a` is an OBJ_GET_INFO_BY_FD attr whose buffer pointers are the loader's.
unsafe fn attachment_link_info(a: &Attr, l: &shm_maps::LinkRecord, info: &mut Vec<u8>) -> Result<(), i32> {
    for v in [abi::BPF_LINK_TYPE_PERF_EVENT, l.id, l.prog_id] {
        info.extend_from_slice(&v.to_ne_bytes());
    }
    info.resize(48, 0);
    let kind = match l.kind {
        shm_maps::LinkKind::Uprobe => 1u32,
        shm_maps::LinkKind::Uretprobe => 2,
        _ => return Ok(()),
    };
    let user_len = (a.u32(attr::INFO_LEN) as usize).min(48);
    // SAFETY: the loader gave `info_len` readable bytes at `info`.
    let given = unsafe { user_bytes(a.u64(attr::INFO_PTR), user_len)? };
    let name_ptr = given.get(24..32).map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8")));
    let name_cap = given.get(32..36).map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4"))) as usize;
    let mut name = l.target_path.as_bytes().to_vec();
    name.push(0);
    if name_ptr != 0 {
        if name_cap < name.len() {
            return Err(libc::ENOSPC);
        }
        // SAFETY: the loader's buffer of `name_len` bytes.
        unsafe { to_user(name_ptr, &name)? };
    }
    info[16..20].copy_from_slice(&kind.to_ne_bytes());
    info[24..32].copy_from_slice(&name_ptr.to_ne_bytes());
    info[32..36].copy_from_slice(&(name.len() as u32).to_ne_bytes());
    info[36..40].copy_from_slice(&(l.file_offset as u32).to_ne_bytes());
    info[40..48].copy_from_slice(&l.cookie.to_ne_bytes());
    Ok(())
}

/// `BPF_{PROG,MAP,LINK}_GET_NEXT_ID`: the smallest registry id above `start_id`.
///
/// # Safety
/// `attr_ptr` is the caller's writable attr.
unsafe fn next_id(a: &Attr, attr_ptr: *mut u8, ids: Vec<u32>) -> Result<c_long, i32> {
    let start = a.u32(attr::ID_START);
    let next = ids.into_iter().find(|&id| id > start).ok_or(libc::ENOENT)?;
    // SAFETY: writing `next_id` inside the caller's attr.
    unsafe { abi::write_attr_u32(attr_ptr, attr::ID_NEXT, next) };
    Ok(0)
}

/// `BPF_{PROG,MAP}_GET_FD_BY_ID`: a new fd on the object's registry file.
/// If this loader created the object, the fd names it (objects are keyed by
/// file); otherwise it is a [`ForeignObject`] whose close removes nothing.
fn fd_by_id(object: ForeignObject) -> Result<c_long, i32> {
    use std::os::fd::IntoRawFd;
    let reg = backend::registry()?;
    let path = match object {
        ForeignObject::Prog(id) => reg.prog_path(id),
        ForeignObject::Map(id) => reg.map_path(id),
        ForeignObject::Link(id) => reg.link_path(id),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | None => libc::ENOENT,
            Some(e) => e,
        })?;
    let fd = file.into_raw_fd();
    if TABLE.get(fd).is_some() {
        return Ok(fd as c_long);
    }
    register(fd, Object::Foreign(object))
}

/// # Safety
/// `attr_ptr` is the caller's writable attr.
unsafe fn obj_get_info(a: &Attr, attr_ptr: *mut u8) -> Result<c_long, i32> {
    let fd = a.u32(attr::INFO_FD);
    let obj = TABLE.get(fd as RawFd).ok_or(libc::EBADF)?;
    let mut info = Vec::new();
    let put32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_ne_bytes());
    match &*obj {
        Object::Map(m) => {
            map_info_bytes(&mut info, &m.spec, m.map.id());
        }
        Object::Foreign(ForeignObject::Map(id)) => {
            let i = backend::registry()?.map_info(*id).map_err(|_| libc::ENOENT)?;
            let spec = backend::MapSpec {
                map_type: i.map_type,
                key_size: i.key_size,
                value_size: i.value_size,
                max_entries: i.max_entries,
                map_flags: i.map_flags,
                name: i.name,
                ..Default::default()
            };
            map_info_bytes(&mut info, &spec, *id);
        }
        Object::Prog(p) => {
            let record = backend::registry()?.prog(p.id).map_err(|_| libc::ENOENT)?;
            // SAFETY: the loader's info buffer and the arrays it names.
            unsafe { prog_info_bytes(a, &record, &mut info, p.btf.as_ref())? };
        }
        Object::Foreign(ForeignObject::Link(id)) => {
            let record = backend::registry()?.link(*id).map_err(|_| libc::ENOENT)?;
            // SAFETY: the loader's info buffer and the name buffer it names.
            unsafe { attachment_link_info(a, &record, &mut info)? };
        }
        Object::Foreign(ForeignObject::Prog(id)) => {
            let record = backend::registry()?.prog(*id).map_err(|_| libc::ENOENT)?;
            // SAFETY: as above.
            unsafe { prog_info_bytes(a, &record, &mut info, None)? };
        }
        Object::Btf(b) => {
            // struct bpf_btf_info: btf (ptr), btf_size, id, name (ptr),
            // name_len, kernel_btf. As the kernel: as much of the blob as
            // `btf_size` says is copied, and the full size reported; a
            // loader's BTF has no name.
            let user_len = (a.u32(attr::INFO_LEN) as usize).min(32);
            // SAFETY: the loader gave `info_len` readable bytes at `info`.
            let given = unsafe { user_bytes(a.u64(attr::INFO_PTR), user_len)? };
            let ubtf = given.get(0..8).map_or(0, |v| u64::from_ne_bytes(v.try_into().expect("8")));
            let usize_ = given.get(8..12).map_or(0, |v| u32::from_ne_bytes(v.try_into().expect("4")));
            if ubtf != 0 {
                let n = (usize_ as usize).min(b.data.len());
                // SAFETY: the loader's buffer of `btf_size` bytes.
                unsafe { to_user(ubtf, &b.data[..n])? };
            }
            info.extend_from_slice(&ubtf.to_ne_bytes());
            put32(&mut info, b.data.len() as u32);
            put32(&mut info, b.id);
            info.extend_from_slice(&given.get(16..24).map_or([0; 8], |v| v.try_into().unwrap_or([0; 8])));
            put32(&mut info, 0); // name_len
            put32(&mut info, 0); // kernel_btf
        }
        Object::Link(l) => {
            // struct bpf_link_info: type, id, prog_id, then the union at 16.
            put32(&mut info, l.link_type);
            put32(&mut info, l.id);
            put32(&mut info, l.prog_id);
            info.resize(16, 0);
            if let Some(u) = &l.uprobe_multi {
                // SAFETY: the loader's info buffer and the arrays it names.
                unsafe { uprobe_multi_info(a, u, &mut info)? };
            }
        }
        other => {
            let _ = other;
            return Err(libc::EINVAL);
        }
    }
    let user_len = a.u32(attr::INFO_LEN) as usize;
    let n = user_len.min(info.len());
    // SAFETY: the loader gave `info_len` writable bytes at `info`.
    unsafe {
        to_user(a.u64(attr::INFO_PTR), &info[..n])?;
        abi::write_attr_u32(attr_ptr, attr::INFO_LEN, n as u32);
    }
    Ok(0)
}

/// Ids of BTF objects, counted per loader from 1 (`bpf_btf_info.id`).
static NEXT_BTF_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// `BPF_BTF_LOAD`: keep the loader's BTF behind a memfd that holds it. The
/// header is checked as the kernel's `btf_parse_hdr` does (magic, version,
/// header length, the type and string sections inside the blob), since
/// libbpf probes BTF support by loading small blobs and decides from the
/// answer whether to upload its object's BTF; userbpf does not interpret
/// the types themselves (its verifier works without them), so a blob with a
/// sound header is accepted whatever kinds it uses.
fn btf_load(a: &Attr) -> Result<c_long, i32> {
    let size = a.u32(attr::BTF_SIZE) as usize;
    let log = LogBuf {
        level: a.u32(attr::BTF_LOG_LEVEL),
        size: a.u32(attr::BTF_LOG_SIZE),
        ptr: a.u64(attr::BTF_LOG_BUF),
    };
    if size > abi::BTF_MAX_SIZE {
        return Err(libc::E2BIG);
    }
    if size == 0 {
        return Err(libc::EINVAL);
    }
    // SAFETY: the loader's blob of `size` bytes; a bad pointer gives EFAULT.
    let data = unsafe { user_bytes(a.u64(attr::BTF_DATA), size)? };
    if let Err(why) = btf_header_ok(&data) {
        log.write(&format!("{why}\n"));
        if report::tracing() {
            report::line(&format!("userbpf trace: BTF of {size} bytes refused: {why}"));
        }
        return Err(libc::EINVAL);
    }
    let id = NEXT_BTF_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fd = crate::sysfs::memfd_with(c"userbpf-btf", &data)?;
    register(fd, Object::Btf(crate::objects::BtfObject { id, data }))
}

/// The kernel's `btf_parse_hdr` checks, with its log messages.
fn btf_header_ok(data: &[u8]) -> Result<(), &'static str> {
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_ne_bytes(b.try_into().expect("2")));
    let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_ne_bytes(b.try_into().expect("4")));
    // struct btf_header: magic u16, version u8, flags u8, hdr_len u32,
    // type_off, type_len, str_off, str_len (u32 each).
    let (Some(magic), Some(hdr_len)) = (u16_at(0), u32_at(4)) else {
        return Err("btf_header not found");
    };
    if magic != abi::BTF_MAGIC {
        return Err("Invalid magic");
    }
    if data[2] != 1 {
        return Err("Unsupported version");
    }
    if data[3] != 0 {
        return Err("Unsupported flags");
    }
    let hdr_len = hdr_len as usize;
    if hdr_len < 24 || hdr_len > data.len() {
        return Err("hdr_len not found");
    }
    let fields = [u32_at(8), u32_at(12), u32_at(16), u32_at(20)];
    let [Some(type_off), Some(type_len), Some(str_off), Some(str_len)] = fields.map(|f| f.map(|v| v as u64)) else {
        return Err("btf_header not found");
    };
    let body = (data.len() - hdr_len) as u64;
    if type_off % 4 != 0 {
        return Err("Unaligned type_off");
    }
    if str_len == 0 || str_off + str_len > body || type_off + type_len > body {
        return Err("Invalid string section");
    }
    Ok(())
}

/// Ids of links that have no registry attachment (timers), counted per
/// loader from 2^31 so they never meet the registry's ids.
static NEXT_LINK_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1 << 31);

/// `bpf_link_info.id` of a link over `events`: the registry id of its first
/// uprobe (what `LINK_GET_NEXT_ID` lists), else a loader-local id.
fn link_id_of(events: &[Arc<Object>]) -> u32 {
    events
        .iter()
        .find_map(|e| match &**e {
            Object::Uprobe(u) => u.attachment.link_id(),
            _ => None,
        })
        .unwrap_or_else(|| NEXT_LINK_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn new_link(link: LinkObject) -> Result<c_long, i32> {
    let fd = crate::sysfs::memfd_with(c"userbpf-link", &[])?;
    register(fd, Object::Link(link))
}

/// `bpf_link_info.uprobe_multi` (offset 16): `path`, `offsets`,
/// `ref_ctr_offsets`, `cookies` (user pointers, filled when non-null),
/// `path_size`, `count`, `flags`, `pid`. As in the kernel, arrays are filled
/// only when the caller's `count` is large enough (ENOSPC after writing the
/// counts otherwise), and the path is truncated to `path_size`.
///
/// # Safety
/// `a` is an OBJ_GET_INFO_BY_FD attr whose buffer pointers are the loader's.
unsafe fn uprobe_multi_info(
    a: &Attr,
    u: &crate::objects::UprobeMultiInfo,
    info: &mut Vec<u8>,
) -> Result<(), i32> {
    const BASE: usize = 16;
    let user_len = a.u32(attr::INFO_LEN) as usize;
    // SAFETY: the loader gave `info_len` readable bytes at `info`.
    let given = unsafe { user_bytes(a.u64(attr::INFO_PTR), user_len.min(BASE + 48))? };
    let field64 = |off: usize| {
        given
            .get(BASE + off..BASE + off + 8)
            .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
    };
    let field32 = |off: usize| {
        given
            .get(BASE + off..BASE + off + 4)
            .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
    };
    let (upath, uoffsets, uref, ucookies) = (field64(0), field64(8), field64(16), field64(24));
    let (upath_size, ucount) = (field32(32) as usize, field32(36) as usize);
    let mut path_size = u.path.len() as u32 + 1;
    if upath != 0 && upath_size > 0 {
        let mut bytes = u.path.as_bytes()[..u.path.len().min(upath_size - 1)].to_vec();
        bytes.push(0);
        // SAFETY: the loader's buffer of `path_size` bytes.
        unsafe { to_user(upath, &bytes)? };
        path_size = bytes.len() as u32;
    }
    info.resize(BASE + 48, 0);
    info[BASE..BASE + 32].copy_from_slice(&given.get(BASE..BASE + 32).map_or([0; 32], |b| {
        let mut z = [0u8; 32];
        z[..b.len()].copy_from_slice(b);
        z
    }));
    let count = u.offsets.len();
    for (off, v) in [(32, path_size), (36, count as u32), (40, u.flags), (44, u.pid)] {
        info[BASE + off..BASE + off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    if uoffsets == 0 && uref == 0 && ucookies == 0 {
        return Ok(());
    }
    if ucount < count {
        return Err(libc::ENOSPC);
    }
    let as_bytes = |v: &[u64]| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
    for (ptr, values) in [(uoffsets, &u.offsets), (uref, &u.ref_ctr_offsets), (ucookies, &u.cookies)] {
        if ptr != 0 {
            // SAFETY: the loader's array of at least `count` u64s.
            unsafe { to_user(ptr, &as_bytes(values))? };
        }
    }
    Ok(())
}

fn link_create(a: &Attr) -> Result<c_long, i32> {
    let attach_type = a.u32(attr::LINK_ATTACH_TYPE);
    match attach_type {
        abi::BPF_PERF_EVENT => {
            let prog = prog_of(a.u32(attr::LINK_PROG_FD))?;
            let event = TABLE
                .get(a.u32(attr::LINK_TARGET_FD) as RawFd)
                .ok_or(libc::EBADF)?;
            let cookie = a.u64(attr::LINK_PERF_COOKIE);
            crate::perf::set_bpf(&event, &prog, cookie)?;
            crate::perf::set_enabled(&event, true)?;
            let Object::Prog(p) = &*prog else {
                unreachable!()
            };
            let events = vec![event];
            new_link(LinkObject {
                link_type: abi::BPF_LINK_TYPE_PERF_EVENT,
                id: link_id_of(&events),
                events,
                prog_id: p.id,
                uprobe_multi: None,
            })
        }
        abi::BPF_TRACE_UPROBE_MULTI => {
            // SAFETY: the attr's pointers are the loader's.
            unsafe { uprobe_multi_link(a) }
        }
        // Feature probes for multi-kprobes and kprobe sessions (bpftrace
        // 0.27 at start-up): kernel features, refused quietly.
        abi::BPF_TRACE_KPROBE_MULTI | abi::BPF_TRACE_KPROBE_SESSION => Err(libc::EOPNOTSUPP),
        _ => {
            report::unsupported(
                &format!("BPF_LINK_CREATE with attach type {attach_type}"),
                "userbpf links perf events (uprobes, timers) and uprobe_multi",
            );
            Err(libc::EOPNOTSUPP)
        }
    }
}

/// The link behind `fd`: EBADF if `fd` is not ours, EINVAL if it is not a link.
fn link_of(fd: u32) -> Result<Arc<Object>, i32> {
    let obj = TABLE.get(fd as RawFd).ok_or(libc::EBADF)?;
    match &*obj {
        Object::Link(_) => Ok(obj),
        _ => Err(libc::EINVAL),
    }
}

/// `BPF_LINK_UPDATE`: the kernel's perf-event and uprobe_multi links have
/// no `update_prog`, so after checking the link and the new program it
/// answers EINVAL; so does the server, for the same links.
fn link_update(a: &Attr) -> Result<c_long, i32> {
    if a.u32(attr::LINK_UPDATE_FLAGS) & !abi::BPF_F_REPLACE != 0 {
        return Err(libc::EINVAL);
    }
    link_of(a.u32(attr::LINK_UPDATE_LINK_FD))?;
    prog_of(a.u32(attr::LINK_UPDATE_NEW_PROG_FD))?;
    Err(libc::EINVAL)
}

/// `BPF_LINK_DETACH`: the kernel's perf-event and uprobe_multi links have
/// no `detach` operation (EOPNOTSUPP); closing the link detaches it.
fn link_detach(a: &Attr) -> Result<c_long, i32> {
    link_of(a.u32(attr::LINK_DETACH_LINK_FD))?;
    Err(libc::EOPNOTSUPP)
}

/// `BPF_LINK_CREATE(BPF_TRACE_UPROBE_MULTI)`: one uprobe per offset of one
/// file, each with its own cookie and USDT semaphore, all bound to one
/// program and enabled together. Checks and errnos follow the kernel's
/// `bpf_uprobe_multi_link_attach` in order, so libbpf's and bpftrace's
/// feature probes (path "/" gives EBADF, pid -1 gives EINVAL) read the
/// answers of a kernel that has uprobe_multi.
///
/// # Safety
/// The attr's pointers are the loader's (bad ones give EFAULT).
unsafe fn uprobe_multi_link(a: &Attr) -> Result<c_long, i32> {
    use crate::objects::{UprobeEvent, UprobeMultiInfo};
    let prog = prog_of(a.u32(attr::LINK_PROG_FD))?;
    let Object::Prog(p) = &*prog else {
        unreachable!()
    };
    if p.prog_type != abi::BPF_PROG_TYPE_KPROBE
        || p.expected_attach_type != abi::BPF_TRACE_UPROBE_MULTI
    {
        return Err(libc::EINVAL);
    }
    let flags = a.u32(attr::LINK_UPROBE_MULTI_FLAGS);
    if flags & !abi::BPF_F_UPROBE_MULTI_RETURN != 0 {
        return Err(libc::EINVAL);
    }
    let path_ptr = a.u64(attr::LINK_UPROBE_MULTI_PATH);
    let offsets_ptr = a.u64(attr::LINK_UPROBE_MULTI_OFFSETS);
    let cnt = a.u32(attr::LINK_UPROBE_MULTI_CNT);
    let pid = a.u32(attr::LINK_UPROBE_MULTI_PID) as i32;
    if path_ptr == 0 || offsets_ptr == 0 || cnt == 0 || pid < 0 {
        return Err(libc::EINVAL);
    }
    if cnt > abi::MAX_UPROBE_MULTI_CNT {
        return Err(libc::E2BIG);
    }
    // SAFETY: forwarded; a bad pointer gives EFAULT.
    let path = unsafe { user_path(path_ptr)? };
    let meta = std::fs::metadata(&path).map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT))?;
    if !meta.is_file() {
        return Err(libc::EBADF);
    }
    if pid > 0 && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(libc::ESRCH);
    }
    let n = cnt as usize;
    // SAFETY: the loader's arrays of `cnt` u64s; bad pointers give EFAULT.
    let offsets = unsafe { user_u64s(offsets_ptr, n)? };
    let optional = |ptr: u64| -> Result<Vec<u64>, i32> {
        if ptr == 0 {
            Ok(vec![0; n])
        } else {
            // SAFETY: as above.
            unsafe { user_u64s(ptr, n) }
        }
    };
    let ref_ctr_offsets = optional(a.u64(attr::LINK_UPROBE_MULTI_REF_CTR_OFFSETS))?;
    let cookies = optional(a.u64(attr::LINK_UPROBE_MULTI_COOKIES))?;
    if offsets.iter().any(|&o| (o as i64) < 0) {
        return Err(libc::EINVAL);
    }
    if pid > 0 {
        crate::perf::warn_if_no_agent(pid);
    } else {
        crate::perf::warn_if_file_runs_untraced(&path);
    }
    let kind = if flags & abi::BPF_F_UPROBE_MULTI_RETURN != 0 {
        shm_maps::LinkKind::Uretprobe
    } else {
        shm_maps::LinkKind::Uprobe
    };
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let event = Arc::new(Object::Uprobe(UprobeEvent {
            attachment: backend::Attachment::new(backend::AttachSpec {
                kind,
                path: path.clone(),
                file_offset: offsets[i],
                ref_ctr_offset: ref_ctr_offsets[i],
                pid: if pid > 0 { pid } else { -1 },
                config: 0,
                sample_period: 0,
                cpu: -1,
            }),
        }));
        crate::perf::set_bpf(&event, &prog, cookies[i])?;
        events.push(event);
    }
    // Enable all once all are bound, so the probes start together.
    for event in &events {
        crate::perf::set_enabled(event, true)?;
    }
    new_link(LinkObject {
        link_type: abi::BPF_LINK_TYPE_UPROBE_MULTI,
        id: link_id_of(&events),
        events,
        prog_id: p.id,
        uprobe_multi: Some(UprobeMultiInfo {
            path,
            offsets,
            ref_ctr_offsets,
            cookies,
            flags,
            pid: pid as u32,
        }),
    })
}

/// A NUL-terminated path of at most `PATH_MAX` bytes from the loader
/// (the kernel's `strndup_user`: EFAULT for a bad pointer, ENAMETOOLONG).
///
/// # Safety
/// As [`user_bytes`].
pub(crate) unsafe fn user_path(ptr: u64) -> Result<String, i32> {
    // SAFETY: forwarded.
    let bytes = unsafe { crate::uaccess::read_cstr(ptr, libc::PATH_MAX as usize - 1)? };
    String::from_utf8(bytes).map_err(|_| libc::EINVAL)
}
