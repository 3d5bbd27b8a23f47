//! Printing command results for people (aligned tables) and for programs
//! (`--json`: pretty-printed JSON on stdout, one document per command).

use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        // Our types serialise infallibly; say so rather than print half a document.
        Err(e) => println!("{{\"error\": {:?}}}", e.to_string()),
    }
}

/// Prints rows as a left-aligned table (last column unpadded).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| if i == last { c.to_string() } else { format!("{c:w$}", w = widths[i]) }).collect();
        println!("  {}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
