//! Link `libagent.so` with `-z nodelete`: the agent starts a thread,
//! registers `pthread_atfork` handlers and patches code to jump into itself,
//! so it must never be unmapped, even if someone `dlclose`s it.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
