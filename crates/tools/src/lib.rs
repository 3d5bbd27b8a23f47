//! The parts of the `userbpf` command line that benchmarks and tests drive
//! directly: the OpenMetrics exporter and the bpftrace map shapes it reads.
//! Everything else lives in the binary (`main.rs`).

pub mod error;
pub mod export;
pub mod shapes;
pub mod stop;
