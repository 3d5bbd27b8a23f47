//! Registry directory: permissions, layout versioning, generation futex,
//! program/link records, liveness and reaping of dead owners.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use shm_maps::{map_type::*, Error, LinkKind, LinkRecord, ProgRecord, Registry, RegistryOptions};

#[test]
fn directory_is_private() {
    let t = TempRegistry::new("perm");
    let mode = std::fs::metadata(&t.dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let m = t.map(HASH, 8, 8, 4);
    let mode = std::fs::metadata(t.reg.map_path(m.id())).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn refuses_open_directory() {
    let dir = unique_dir("open-dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Registry::open_with(&dir, &RegistryOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnsafeDir { .. }), "{msg}");
    assert!(msg.contains("chmod 0700") && msg.contains(dir.to_str().unwrap()), "{msg}");
    // Group access is accepted only when sharing is explicit.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
    assert!(Registry::open_with(&dir, &RegistryOptions::default()).is_err());
    assert!(Registry::open_with(&dir, &RegistryOptions { shared: true }).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_symlink_and_foreign_owner() {
    let dir = unique_dir("symlink");
    std::os::unix::fs::symlink("/tmp", &dir).unwrap();
    assert!(matches!(Registry::open_with(&dir, &RegistryOptions::default()), Err(Error::UnsafeDir { .. })));
    std::fs::remove_file(&dir).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let dir = unique_dir("foreign");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let err = Registry::open_with(&dir, &RegistryOptions::default()).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn refuses_other_layout_version() {
    let t = TempRegistry::new("version");
    let m = t.map(HASH, 8, 8, 4);
    let path = t.reg.map_path(m.id());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&999u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = t.reg.open_map(m.id()).unwrap_err();
    assert!(err.to_string().contains("version 999"), "{err}");
    // The registry file too.
    let reg_path = t.dir.join("registry");
    let mut bytes = std::fs::read(&reg_path).unwrap();
    bytes[8..12].copy_from_slice(&999u32.to_le_bytes());
    std::fs::write(&reg_path, &bytes).unwrap();
    let err = Registry::open_with(&t.dir, &RegistryOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }) && err.to_string().contains("layout version 999"), "{err}");
}

#[test]
fn an_older_smaller_registry_file_is_reported_as_a_version_mismatch() {
    let t = TempRegistry::new("oldversion");
    let reg_path = t.dir.join("registry");
    let mut bytes = std::fs::read(&reg_path).unwrap();
    // Layout version 1 had no CPU slots: header page + 1,024 reader slots.
    bytes.truncate(4096 + 1024 * 64);
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&reg_path, &bytes).unwrap();
    let err = Registry::open_with(&t.dir, &RegistryOptions::default()).unwrap_err();
    assert!(err.to_string().contains("layout version 1 but"), "{err}");
}

#[test]
fn generation_wakes_waiters() {
    let t = TempRegistry::new("gen");
    let g0 = t.reg.generation();
    let start = Instant::now();
    assert_eq!(t.reg.wait_generation_change(g0, Some(Duration::from_millis(20))), g0);
    assert!(start.elapsed() >= Duration::from_millis(15), "timed wait");
    let reg2 = Registry::open_with(&t.dir, &RegistryOptions::default()).unwrap();
    let h = std::thread::spawn(move || {
        let g = reg2.generation();
        reg2.wait_generation_change(g, Some(Duration::from_secs(10)))
    });
    std::thread::sleep(Duration::from_millis(50));
    t.map(ARRAY, 4, 4, 1);
    let g1 = h.join().unwrap();
    assert_ne!(g1, g0);
}

#[test]
fn prog_and_link_records_round_trip() {
    let t = TempRegistry::new("records");
    let m = t.map(PERCPU_HASH, 8, 8, 4096);
    let prog = ProgRecord {
        prog_type: 2,
        name: "uprobe_app_fun".into(),
        license: "GPL".into(),
        insns: vec![0x18, 0x11, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0],
        map_ids: vec![m.id()],
        verifier_log: "ok".into(),
        ..Default::default()
    };
    let pid = t.reg.create_prog(&prog).unwrap();
    let got = t.reg.prog(pid).unwrap();
    assert_eq!(got.id, pid);
    assert_eq!(got.owner, t.reg.owner_id());
    assert_eq!(ProgRecord { id: 0, owner: 0, ..got }, prog);
    assert!(t.reg.create_prog(&ProgRecord { insns: vec![0; 7], ..Default::default() }).is_err());
    let link = LinkRecord {
        kind: LinkKind::Uretprobe,
        prog_id: pid,
        target_path: "/usr/bin/app".into(),
        file_offset: 0x1139,
        dev: 2049,
        inode: 1234,
        pid: -1,
        cookie: 7,
        ..Default::default()
    };
    let lid = t.reg.create_link(&link).unwrap();
    let g = t.reg.generation();
    t.reg.set_link_enabled(lid, true).unwrap();
    assert_ne!(t.reg.generation(), g);
    let links = t.reg.links();
    assert_eq!(links.len(), 1);
    assert!(links[0].enabled);
    assert_eq!(LinkRecord { id: 0, owner: 0, enabled: false, ..links[0].clone() }, link);
    assert_eq!(t.reg.progs().len(), 1);
    let maps = t.reg.maps();
    assert_eq!(maps.len(), 1);
    assert_eq!((maps[0].map_type, maps[0].key_size, maps[0].value_size, maps[0].max_entries), (PERCPU_HASH, 8, 8, 4096));
    t.reg.remove_link(lid).unwrap();
    assert!(t.reg.links().is_empty());
    assert!(matches!(t.reg.remove_link(lid), Err(Error::NotFound { .. })));
    assert!(matches!(t.reg.open_map(9999), Err(Error::NotFound { .. })));
}

/// Forks a child that creates objects and exits (or is killed) without
/// cleaning up; the parent's reap must remove exactly the child's objects.
#[test]
fn dead_owners_objects_are_reaped() {
    let t = TempRegistry::new("reap");
    let mine = t.map(HASH, 8, 8, 4);
    let (rfd, wfd) = pipe();
    // SAFETY: the child only uses the registry and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let reg = Registry::open_with(&t.dir, &RegistryOptions::default()).unwrap();
        let m = reg.create_map(&shm_maps::MapSpec { map_type: ARRAY, key_size: 4, value_size: 4, max_entries: 1, ..Default::default() }).unwrap();
        let p = reg.create_prog(&ProgRecord { name: "child".into(), ..Default::default() }).unwrap();
        reg.create_link(&LinkRecord { prog_id: p, ..Default::default() }).unwrap();
        reg.create_perf_ring(1).unwrap();
        let _ = m;
        // SAFETY: write to our pipe end, then wait to be killed.
        unsafe {
            libc::write(wfd, b"x".as_ptr() as *const _, 1);
            libc::pause();
            libc::_exit(0);
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte from our pipe end.
    assert_eq!(unsafe { libc::read(rfd, b.as_mut_ptr() as *mut _, 1) }, 1);
    assert_eq!(t.reg.maps().len(), 2);
    assert_eq!(t.reg.reap(), 0, "child still alive: nothing reaped");
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    assert_eq!(t.reg.reap(), 4, "map, prog, link and ring of the dead child");
    let maps = t.reg.maps();
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0].id, mine.id());
    assert!(t.reg.progs().is_empty() && t.reg.links().is_empty());
}

#[test]
fn dropping_the_last_handle_releases_ownership() {
    let t = TempRegistry::new("drop-owner");
    let other = Registry::open_with(&t.dir, &RegistryOptions::default()).unwrap();
    let owner = other.owner_id();
    assert!(t.reg.owner_alive(owner));
    // Both handles of this process share nothing: `other` is its own participant.
    let m = other.create_map(&shm_maps::MapSpec { map_type: ARRAY, key_size: 4, value_size: 4, max_entries: 1, ..Default::default() }).unwrap();
    let id = m.id();
    drop(m);
    drop(other);
    assert!(!t.reg.owner_alive(owner));
    assert_eq!(t.reg.reap(), 1);
    assert!(matches!(t.reg.open_map(id), Err(Error::NotFound { .. })));
}

pub fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

#[test]
fn inspection_handle_changes_nothing() {
    let t = TempRegistry::new("inspect");
    let m = t.map(HASH, 8, 8, 4);
    m.update(&k64(1), &k64(2), 0).unwrap();
    t.reg.set_role("loader").unwrap();
    let owners_before = t.reg.owners();
    let gen = t.reg.generation();
    let ro = Registry::open_existing(&t.dir).unwrap();
    let rm = ro.open_map(m.id()).unwrap();
    let mut out = [0u8; 8];
    rm.lookup(&k64(1), &mut out).unwrap();
    let mut next = [0u8; 8];
    rm.get_next_key(None, &mut next).unwrap();
    assert_eq!(ro.maps().len(), 1);
    assert_eq!(t.reg.owners(), owners_before, "no owner registered by reads");
    assert_eq!(t.reg.generation(), gen);
    let me = owners_before.iter().find(|o| o.id == t.reg.owner_id()).unwrap();
    assert_eq!((me.pid, me.role.as_str(), me.alive), (std::process::id() as i32, "loader", true));
    let missing = unique_dir("missing");
    assert!(Registry::open_existing(&missing).is_err());
    assert!(!missing.exists(), "nothing created");
}

#[test]
fn links_can_be_updated_atomically() {
    let t = TempRegistry::new("link-update");
    let id = t.reg.create_link(&LinkRecord { target_path: "/bin/true".into(), ..Default::default() }).unwrap();
    let g = t.reg.generation();
    let rec = t.reg.update_link(id, |l| l.prog_id = 42).unwrap();
    assert_eq!(rec.prog_id, 42);
    assert_eq!(t.reg.link(id).unwrap().prog_id, 42);
    assert_ne!(t.reg.generation(), g);
    t.reg.remove_link(id).unwrap();
    assert!(t.reg.update_link(id, |l| l.prog_id = 1).is_err(), "a removed link is not resurrected");
    assert!(t.reg.links().is_empty());
}

#[test]
fn corrupt_map_headers_are_refused() {
    let t = TempRegistry::new("corrupt");
    let m = t.map(HASH, 8, 8, 64);
    let path = t.reg.map_path(m.id());
    let good = std::fs::read(&path).unwrap();
    // max_entries (offset 36) enlarged: offsets would point past the file.
    let mut bad = good.clone();
    bad[36..40].copy_from_slice(&100_000u32.to_ne_bytes());
    std::fs::write(&path, &bad).unwrap();
    let err = t.reg.open_map(m.id()).unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    // elems_off (offset 104) moved.
    let mut bad = good.clone();
    bad[104..112].copy_from_slice(&(1u64 << 40).to_ne_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(t.reg.open_map(m.id()), Err(Error::Incompatible { .. })));
    std::fs::write(&path, &good).unwrap();
    t.reg.open_map(m.id()).unwrap();
}

/// An owner file between creation and publication (`owners/.tmp-<id>`) belongs
/// to a process in the middle of registering: a concurrent `reap` must not
/// delete it (that made a live loader look dead and its probes never fire).
/// Only an unlocked one older than the grace period is abandoned.
#[test]
fn an_owner_file_being_registered_is_not_reaped() {
    use std::os::fd::AsRawFd;
    let t = TempRegistry::new("owner-tmp");
    let tmp = t.dir.join("owners").join(".tmp-4000000000");
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&tmp).unwrap();
    // The creator holds an OFD write lock on it, as `create_owner_file` does.
    // SAFETY: zeroed flock is valid; fields set below; fd is open.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) }, 0);
    let set_age = |secs_ago: i64| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let ts = libc::timespec { tv_sec: now - secs_ago, tv_nsec: 0 };
        let times = [ts, ts];
        let c = std::ffi::CString::new(tmp.to_str().unwrap()).unwrap();
        // SAFETY: valid path and two timespecs.
        assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) }, 0);
    };
    // Locked, even when old: its creator is alive.
    set_age(3600);
    t.reg.reap();
    assert!(tmp.exists(), "a locked owner file being registered was reaped");
    drop(file);
    // Unlocked but fresh: a creator may be between create and lock.
    set_age(0);
    t.reg.reap();
    assert!(tmp.exists(), "a fresh unpublished owner file was reaped");
    // Unlocked and old: abandoned by a creator that died.
    set_age(3600);
    t.reg.reap();
    assert!(!tmp.exists(), "an abandoned owner file was kept");
}

#[test]
fn a_shared_registry_creates_group_writable_files_whatever_the_umask() {
    // SAFETY: umask has no preconditions; 022 is the usual default, set
    // here so the test does not depend on the caller's.
    let previous = unsafe { libc::umask(0o022) };
    let dir = unique_dir("shared-umask");
    let reg = Registry::open_with(&dir, &RegistryOptions { shared: true }).unwrap();
    let map = reg
        .create_map(&shm_maps::MapSpec { map_type: HASH, key_size: 8, value_size: 8, max_entries: 4, ..Default::default() })
        .unwrap();
    let prog = reg.create_prog(&ProgRecord { name: "p".into(), insns: vec![0; 8], ..Default::default() }).unwrap();
    reg.create_link(&LinkRecord { kind: LinkKind::Uprobe, prog_id: prog, ..Default::default() }).unwrap();
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let mut files = vec![dir.join("registry")];
    for sub in ["owners", "maps", "progs", "links"] {
        files.extend(std::fs::read_dir(dir.join(sub)).unwrap().map(|e| e.unwrap().path()));
    }
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{} is {mode:o}", file.display());
    }
    drop(map);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A thread's map reader slot is given back when the thread exits (by a
/// pthread key destructor: the thread-local holding it has no destructor of
/// its own, so a first read in a signal handler allocates nothing), so many
/// short-lived threads never exhaust the registry's slots.
#[test]
fn exiting_threads_give_their_reader_slots_back() {
    let t = TempRegistry::new("readers");
    for _ in 0..(shm_maps::READER_SLOTS + 200) {
        std::thread::scope(|s| {
            s.spawn(|| drop(t.reg.read_section()));
        });
    }
    assert!(t.reg.reader_slots_high_water() < 16, "slots used: {}", t.reg.reader_slots_high_water());
}
