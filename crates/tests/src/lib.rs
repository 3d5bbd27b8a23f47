//! End-to-end tests: real bpftrace, real target programs. Shared test
//! utilities live here; the tests themselves are in `tests/`.
