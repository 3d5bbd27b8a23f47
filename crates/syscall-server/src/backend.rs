//! The registry as the server sees it: maps, programs, perf rings and
//! attachments in shared memory (`shm-maps`).
//!
//! INTEGRATION POINT (temporary): shm-maps has not published its API yet;
//! every operation fails with ENOSYS and says so.

use std::os::fd::OwnedFd;

#[derive(Clone, Debug)]
pub struct MapSpec {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub name: String,
}

pub struct AttachSpec {
    pub retprobe: bool,
    pub path: String,
    pub file_offset: u64,
    pub pid_filter: Option<i32>,
}

fn pending() -> i32 {
    crate::report::unsupported("the userbpf registry", "shm-maps integration is pending");
    libc::ENOSYS
}

pub struct Map;
impl Map {
    pub fn id(&self) -> u32 { 0 }
    pub fn lookup(&self, _k: &[u8], _out: &mut [u8]) -> Result<(), i32> { Err(pending()) }
    pub fn lookup_and_delete(&self, _k: &[u8], _out: &mut [u8]) -> Result<(), i32> { Err(pending()) }
    pub fn update(&self, _k: &[u8], _v: &[u8], _flags: u64) -> Result<(), i32> { Err(pending()) }
    pub fn delete(&self, _k: &[u8]) -> Result<(), i32> { Err(pending()) }
    pub fn get_next_key(&self, _k: Option<&[u8]>, _out: &mut [u8]) -> Result<(), i32> { Err(pending()) }
    pub fn remove(&self) {}
}
pub struct Ring;
impl Ring {
    pub fn id(&self) -> u32 { 0 }
    pub fn has_data(&self) -> bool { false }
    pub fn remove(&self) {}
}
pub struct Attachment;
impl Attachment {
    pub fn set_program(&self, _id: u32) -> Result<(), i32> { Err(pending()) }
    pub fn set_enabled(&self, _on: bool) -> Result<(), i32> { Err(pending()) }
    pub fn remove(&self) {}
}

pub fn user_value_size(spec: &MapSpec) -> usize { spec.value_size as usize }
pub fn nr_possible_cpus() -> u32 { 1 }
pub fn create_map(_s: &MapSpec) -> Result<(Map, OwnedFd), i32> { Err(pending()) }
pub fn store_program(_t: u32, _n: &str, _i: &[u64], _m: &[u32]) -> Result<(u32, OwnedFd), i32> { Err(pending()) }
pub fn remove_program(_id: u32) {}
pub fn create_ring(_cpu: u32, _pages: u32) -> Result<(Ring, OwnedFd), i32> { Err(pending()) }
pub fn create_attachment(_s: &AttachSpec) -> Result<(Attachment, OwnedFd), i32> { Err(pending()) }
