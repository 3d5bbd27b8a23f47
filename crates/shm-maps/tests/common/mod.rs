//! Test helpers: a private registry directory per test, removed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use shm_maps::{Map, MapSpec, Registry, RegistryOptions};

pub struct TempRegistry {
    pub dir: PathBuf,
    pub reg: Registry,
}

impl TempRegistry {
    pub fn new(tag: &str) -> TempRegistry {
        let dir = unique_dir(tag);
        let reg = Registry::open_with(&dir, &RegistryOptions::default()).expect("open registry");
        TempRegistry { dir, reg }
    }

    pub fn map(&self, map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> Map {
        self.reg
            .create_map(&MapSpec { map_type, key_size, value_size, max_entries, name: "test".into(), ..Default::default() })
            .expect("create map")
    }
}

impl Drop for TempRegistry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn unique_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    PathBuf::from(format!("{base}/userbpf-test-{}-{tag}-{n}", std::process::id()))
}

pub fn k64(v: u64) -> [u8; 8] {
    v.to_ne_bytes()
}

pub fn k32(v: u32) -> [u8; 4] {
    v.to_ne_bytes()
}
