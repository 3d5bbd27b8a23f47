//! The `userbpf` command line: run an app with the agent, run a loader with
//! the syscall server, attach to (and detach from) a running process, inspect
//! the registry, check the machine.
//!
//! This file owns the command-line grammar (clap derive), the help texts and
//! the mapping of every outcome to an exit code; each command lives in its
//! own module. Errors are printed as one line plus an optional hint.

mod attach;
mod doctor;
mod elfsym;
mod inject;
mod inspect;
mod launch;
mod locate;
mod output;
mod procfs;
mod profile;
mod ptrace;
mod stamp;
mod symbolize;

use clap::{Args, Parser, Subcommand};
use error::CliError;
use tools::{error, export, stop};
use locate::Library;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  userbpf run -- ./app --port 8080          start an app with the agent
  userbpf bpftrace -e 'uprobe:./app:handle { @calls = count(); }'
  userbpf load -- bashreadline-bpfcc        run a bcc tool with the syscall server
  userbpf attach 4242                       load the agent into running process 4242
  userbpf list --json                       maps, programs, attachments, processes
  userbpf doctor                            what this machine lacks, and how to fix it

Environment:
  USERBPF_DIR      registry directory shared by loaders and apps (default /dev/shm/userbpf-<uid>)
  USERBPF_LIB_DIR  where libagent.so and libsyscall_server.so are (default: next to userbpf)

Exit codes:
  0 success; 1 failure; 2 bad usage; 3 something missing in the environment
  (see `userbpf doctor`); 4 no such process, map or program; 5 doctor found problems;
  70 internal error (a bug: please report it);
  run/load/bpftrace: the command's own exit status (126 cannot execute, 127 not found).";

#[derive(Parser)]
#[command(
    name = "userbpf",
    version,
    about = "Userspace eBPF: run stock bpftrace, libbpf and bcc tools unprivileged, with programs running inside the traced apps",
    after_help = AFTER_HELP,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start an app with the userbpf agent preloaded (libagent.so).
    #[command(after_help = "Examples:\n  userbpf run ./app\n  userbpf run -- ./server --port 8080\n\n\
        The app replaces userbpf (same pid); userbpf exits with the app's status.")]
    Run(CommandLine),

    /// Run a loader (bpftrace, a libbpf or bcc tool) with the syscall server preloaded.
    #[command(after_help = "Examples:\n  userbpf load -- bpftrace -e 'uprobe:./app:f { @n = count(); }'\n  \
        userbpf load -- /usr/sbin/bashreadline-bpfcc\n\n\
        The loader's bpf() and perf_event_open() calls are answered by userbpf, so it needs no privileges.")]
    Load(CommandLine),

    /// Shorthand for `userbpf load -- bpftrace ARGS…`.
    // -h/--help/-V/--version are bpftrace's here, passed on like every other
    // argument (`userbpf help bpftrace` shows this help).
    #[command(
        after_help = "Example:\n  userbpf bpftrace -e 'uprobe:./app:handle { @[arg0] = count(); }'",
        disable_help_flag = true,
        disable_version_flag = true
    )]
    Bpftrace {
        /// Arguments passed to bpftrace unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<OsString>,
    },

    /// Load the agent into an already running process (ptrace; the app is paused for milliseconds).
    #[command(after_help = "Examples:\n  userbpf attach 4242\n  userbpf attach --json $(pidof app)\n\n\
        One thread of the process is stopped at a safe point, made to call dlopen(libagent.so), and \
        resumed with its registers restored; the pause is measured and printed. Needs permission to \
        ptrace the process (same user, and Yama ptrace_scope 0 if Yama is enabled; see `userbpf doctor`).")]
    Attach {
        /// Process id of the app.
        pid: i32,
        /// Load this library instead of libagent.so (for testing an injection).
        #[arg(long, value_name = "PATH")]
        library: Option<PathBuf>,
        #[command(flatten)]
        common: InjectArgs,
    },

    /// Remove every probe from a process; the process keeps running unchanged.
    #[command(after_help = "Example:\n  userbpf detach 4242")]
    Detach {
        /// Process id of the app.
        pid: i32,
        #[command(flatten)]
        common: InjectArgs,
    },

    /// List maps, programs, attachments and the processes carrying them.
    #[command(after_help = "Examples:\n  userbpf list\n  userbpf list --json | jq '.maps[].name'")]
    List {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },

    /// Inspect maps.
    #[command(subcommand)]
    Map(MapCommand),

    /// Inspect programs.
    #[command(subcommand)]
    Prog(ProgCommand),

    /// Serve the registry's maps as OpenMetrics at /metrics, for Prometheus to scrape.
    #[command(after_help = "Examples:\n  userbpf export\n  userbpf export --listen 127.0.0.1:9435 --map @calls --map @lat\n\n\
        Maps are shaped as bpftrace prints them: count() a counter, sum() and values gauges, hist() and \
        lhist() histograms, avg()/stats() _sum and _count; key parts become labels (key, or key0, key1, …). \
        Each scrape reads shared memory without stopping the traced apps.")]
    Export {
        /// Address to listen on (loopback by default; port 0 picks a free one, printed on stderr).
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9435")]
        listen: String,
        /// Export only this map (@name, name or id); repeatable. Default: every map.
        #[arg(long = "map", value_name = "MAP")]
        maps: Vec<String>,
        /// Prefix of every metric name.
        #[arg(long, default_value = "userbpf_")]
        prefix: String,
        /// At most this many series per scrape; the rest are cut and counted in userbpf_export_series_dropped.
        #[arg(long, value_name = "N", default_value_t = 100_000)]
        max_series: usize,
    },

    /// CPU profile of a process, sampled inside it by its agent: folded stacks or a flame graph.
    #[command(after_help = "Examples:\n  userbpf profile 4242 -d 10 > app.folded\n  userbpf profile --svg app.svg -- ./app --port 8080\n\n\
        PID must have the agent (`userbpf attach PID`); a command is started with it. Every thread is sampled \
        on its own CPU time at -F Hz; user stacks are walked by frame pointers (build with \
        -fno-omit-frame-pointer for full stacks) and named from the process's ELF symbols.")]
    Profile {
        /// Sampling frequency, per second of a thread's CPU time.
        #[arg(short = 'F', long, value_name = "HZ", default_value_t = 99)]
        frequency: u64,
        /// Stop after this many seconds (default: when the command exits, or Ctrl-C).
        #[arg(short = 'd', long, value_name = "SECS")]
        duration: Option<f64>,
        /// Print folded stacks (`comm;root;…;leaf count`) on stdout (the default).
        #[arg(long, conflicts_with = "svg")]
        folded: bool,
        /// Write a flame graph (SVG) here instead.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// A process id, or `-- CMD ARGS…` to start and profile a command.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "PID|-- CMD")]
        target: Vec<OsString>,
    },

    /// Check this machine: kernel features, permissions, installed tools; say how to fix what is missing.
    #[command(after_help = "Examples:\n  userbpf doctor\n  userbpf doctor --json\n\n\
        Exits 0 when everything needed is there, 5 when something is missing.")]
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MapCommand {
    /// Print a map's keys and values (per-CPU values per CPU and summed).
    #[command(after_help = "Examples:\n  userbpf map dump 3\n  userbpf map dump @calls --json")]
    Dump {
        /// Map id or name.
        map: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ProgCommand {
    /// Print a program's disassembly and the verifier's verdict.
    #[command(after_help = "Example:\n  userbpf prog dump 5")]
    Dump {
        /// Program id.
        id: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct CommandLine {
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Args)]
struct InjectArgs {
    /// Give up if the injected call has not returned after this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn run(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Run(line) => launch::exec_with(Library::Agent, &line.command),
        Command::Load(line) => launch::exec_with(Library::SyscallServer, &line.command),
        Command::Bpftrace { args } => {
            let mut command = vec![OsString::from("bpftrace")];
            command.extend(args);
            launch::exec_with(Library::SyscallServer, &command)
        }
        Command::Attach { pid, library, common } => attach::attach(&attach::AttachOptions {
            pid,
            library,
            timeout: Duration::from_millis(common.timeout),
            json: common.json,
        }),
        Command::Detach { pid, common } => attach::detach(&attach::DetachOptions {
            pid,
            timeout: Duration::from_millis(common.timeout),
            json: common.json,
        }),
        Command::List { json } => inspect::list(json),
        Command::Map(MapCommand::Dump { map, json }) => inspect::map_dump(&map, json),
        Command::Prog(ProgCommand::Dump { id, json }) => inspect::prog_dump(id, json),
        Command::Doctor { json } => doctor::doctor(json),
        Command::Profile { frequency, duration, folded: _, svg, target } => {
            let pid = match target.as_slice() {
                [one] => one.to_str().and_then(|s| s.parse::<i32>().ok()),
                _ => None,
            };
            let command = if pid.is_some() { Vec::new() } else { target };
            profile::profile(profile::Options { pid, command, frequency, duration, svg })
        }
        Command::Export { listen, maps, prefix, max_series } => {
            export::run(export::Options { listen, maps, prefix, max_series })
        }
    }
}

/// A bug must still end as one line, not a backtrace: the hook prints the
/// panic as an internal error; `main` catches the unwinding (so that a
/// borrowed thread of a target is restored by `Drop` on the way) and exits
/// with [`error::exit::INTERNAL`].
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("userbpf: internal error: {message}{place}");
        eprintln!("hint: this is a bug in userbpf; please report it with the command line that triggered it");
    }));
}

/// What `userbpf --version` prints: this build's version, commit and
/// registry layout, then each library `userbpf` would preload, with its own
/// stamp, where it was found, and whether it is compatible.
fn version_report() -> String {
    let mine = stamp::own();
    let mut out = format!("userbpf {mine}\n");
    for library in [locate::Library::Agent, locate::Library::SyscallServer] {
        let name = library.file_name();
        let line = match locate::find(library) {
            Err(e) => format!("{name}: {}", e.message),
            Ok(path) => match stamp::read(&path) {
                Ok(Some(s)) if s.layout == mine.layout => format!("{name} {s}: {}", path.display()),
                Ok(Some(s)) => format!(
                    "{name} {s}: {} (incompatible: this userbpf speaks registry layout {}; it refuses to use it)",
                    path.display(),
                    mine.layout
                ),
                Ok(None) => format!("{name} (no userbpf build stamp): {}", path.display()),
                Err(why) => format!("{name}: cannot read {}: {why}", path.display()),
            },
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn main() {
    // Like every Unix tool, end quietly when the reader of our output goes
    // away (`userbpf list | head -1`): Rust ignores SIGPIPE, which turns the
    // write into an EPIPE panic inside `println!`. The default disposition
    // is also what the commands `run`/`load` exec must inherit (an ignored
    // signal stays ignored across exec).
    // SAFETY: setting a standard disposition before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    install_panic_hook();
    // `userbpf --version` / `-V`: this build and the libraries it would use.
    if matches!(std::env::args_os().nth(1).as_deref().and_then(|a| a.to_str()), Some("--version" | "-V")) {
        print!("{}", version_report());
        std::process::exit(0);
    }
    let cli = Cli::parse();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    let code = match outcome {
        Err(_panic) => error::exit::INTERNAL,
        Ok(Ok(code)) => code,
        Ok(Err(err)) => {
            eprintln!("userbpf: {}", err.message);
            if let Some(hint) = &err.hint {
                eprintln!("hint: {hint}");
            }
            err.code
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_keeps_hyphenated_arguments_for_the_command() {
        let cli = Cli::try_parse_from(["userbpf", "run", "./app", "--port", "1"]).unwrap();
        let Command::Run(line) = cli.command else { panic!("not run") };
        assert_eq!(line.command, ["./app", "--port", "1"]);
        let cli = Cli::try_parse_from(["userbpf", "bpftrace", "-e", "BEGIN { exit(); }"]).unwrap();
        let Command::Bpftrace { args } = cli.command else { panic!("not bpftrace") };
        assert_eq!(args, ["-e", "BEGIN { exit(); }"]);
    }

    #[test]
    fn bpftrace_gets_its_own_help_and_version_flags() {
        for flag in ["-V", "--version", "-h", "--help"] {
            let cli = Cli::try_parse_from(["userbpf", "bpftrace", flag]).unwrap_or_else(|e| panic!("{flag}: {e}"));
            let Command::Bpftrace { args } = cli.command else { panic!("not bpftrace") };
            assert_eq!(args, [flag]);
        }
    }
}
