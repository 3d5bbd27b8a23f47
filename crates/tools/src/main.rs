//! The `userbpf` command line: run an app with the agent, run a loader with
//! the syscall server, attach to a running process, inspect the registry.
//! Not implemented yet (issue 7): every command says so and exits non-zero.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("--help") | Some("-h") => {
            println!("userbpf: userspace eBPF runtime (command line not implemented yet, see issue 7)");
        }
        Some(cmd) => {
            eprintln!("userbpf: command '{cmd}' is not implemented yet");
            std::process::exit(2);
        }
    }
}
