//! Verify captured programs (`tests/corpus/accept/*.prog` format) and print
//! the verdict, instruction counts and, with `-v`, the full log:
//!
//!     cargo run -p verifier --example verify_file -- [-v] FILE...

use std::collections::HashMap;

use verifier::{verify_with_maps, MapDesc, Maps, ProgType, PseudoLoad, VerifyOptions};
use vm::insn::Insn;

#[derive(Default)]
struct Captured {
    prog_type: u32,
    insns: Vec<Insn>,
    maps: HashMap<i32, (MapDesc, u32)>,
    frozen: HashMap<i32, Vec<u8>>,
}

impl Maps for Captured {
    fn describe(&self, load: PseudoLoad) -> Option<MapDesc> {
        self.maps.get(&load.imm).map(|m| m.0)
    }
    fn frozen_readonly_value(&self, load: PseudoLoad) -> Option<Vec<u8>> {
        let readonly = self.maps.get(&load.imm).is_some_and(|m| m.1 & (1 << 7) != 0);
        self.frozen.get(&load.imm).filter(|_| readonly).cloned()
    }
}

fn parse(text: &str) -> Result<Captured, String> {
    let mut c = Captured::default();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| -> Result<i64, String> {
            f.get(i).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad line: {line}"))
        };
        match f[0] {
            "prog_type" => c.prog_type = n(1)? as u32,
            "insn" => c.insns.push(Insn::from_u64(u64::from_str_radix(f[1], 16).map_err(|e| format!("{line}: {e}"))?)),
            "map" => {
                let d = MapDesc { map_type: n(2)? as u32, key_size: n(3)? as u32, value_size: n(4)? as u32, max_entries: n(5)? as u32 };
                c.maps.insert(n(1)? as i32, (d, n(6).unwrap_or(0) as u32));
            }
            "frozen" => {
                let hex = f.get(2).copied().unwrap_or("");
                let bytes: Result<Vec<u8>, _> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16)).collect();
                c.frozen.insert(n(1)? as i32, bytes.map_err(|e| format!("{line}: {e}"))?);
            }
            _ => {}
        }
    }
    Ok(c)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "-v");
    let mut failed = false;
    for path in args.iter().filter(|a| *a != "-v") {
        let c = match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| parse(&t)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{path}: {e}");
                failed = true;
                continue;
            }
        };
        let Some(pt) = ProgType::from_kernel(c.prog_type) else {
            println!("{path}: program type {} not supported", c.prog_type);
            continue;
        };
        let opts = VerifyOptions { log_level: if verbose { 1 } else { 0 }, ..Default::default() };
        match verify_with_maps(&c.insns, pt, &c, &opts) {
            Ok(v) => {
                println!("{path}: ok, {} insns, {} processed", c.insns.len(), v.insns_processed);
                if verbose {
                    print!("{}", v.log);
                }
            }
            Err(e) => {
                failed = true;
                println!("{path}: {} (errno {})", e, e.errno);
                if verbose {
                    print!("{}", e.log);
                }
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
