//! `userbpf export`: the registry's maps as OpenMetrics over HTTP, for a
//! Prometheus server (or an OpenTelemetry collector's Prometheus receiver)
//! to scrape.
//!
//! Every scrape reads the maps where they live, in shared memory, the way
//! `map dump` does: key by key with the maps' own lock-free reads, so the
//! traced apps never wait for a scrape (each value is read whole; a hist's
//! buckets are read one after another, as bpftrace reads them to print).
//! Each map is shaped as bpftrace prints it ([`crate::shapes`]): count maps
//! are counters, sums and plain values gauges, hist/lhist Prometheus
//! histograms (cumulative `le` buckets at the bucket's largest integer,
//! `_sum` unknown to bpftrace and so NaN), avg/stats `_sum`/`_count`
//! (a histogram with only the `+Inf` bucket), min/max gauges; per-CPU
//! values are combined as bpftrace combines them. Key parts become labels
//! (`key`, or `key0`, `key1`, … for tuples).
//!
//! Alongside: how many maps, programs and probes the registry holds, the
//! registered processes by role, and which probes each agent reports
//! installed, and each probe's hits per process (`userbpf_probe_hits_total`).
//! Series beyond `--max-series` are cut and the cut counted
//! (`userbpf_export_series_dropped`). HTTP is `tiny_http`, the encoding
//! `prometheus-client`'s.

use crate::error::{exit, CliError, CliResult};
use crate::shapes::{self, MapMeta, MapShape, Shape};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use shm_maps::{map_type, AgentStatus, Errno, MapInfo, Registry};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What `userbpf export` was asked for.
pub struct Options {
    pub listen: String,
    /// Map names (`@x`, `AT_x`, a name or an id); empty: every map.
    pub maps: Vec<String>,
    pub prefix: String,
    pub max_series: usize,
}

type Labels = Vec<(String, String)>;

/// One sample of a family.
#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(i64),
    /// Cumulative buckets `(le, count)`, ending with `+Inf`; sum; count.
    Histogram {
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    series: Vec<(Labels, Value)>,
}

/// One scrape's worth of families, encoded by prometheus-client.
#[derive(Debug)]
struct Scrape {
    families: Vec<Family>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let kind = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, kind)?;
            for (labels, value) in &family.series {
                let mut series = metric.encode_family(labels)?;
                match value {
                    Value::Counter(v) => series.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                    Value::Gauge(v) => series.encode_gauge(v)?,
                    Value::Histogram {
                        buckets,
                        sum,
                        count,
                    } => {
                        // prometheus-client takes per-bucket counts and accumulates them.
                        let mut previous = 0;
                        let per_bucket: Vec<(f64, u64)> = buckets
                            .iter()
                            .map(|&(le, cumulative)| {
                                let n = cumulative - previous;
                                previous = cumulative;
                                (le, n)
                            })
                            .collect();
                        series.encode_histogram::<NoLabelSet>(*sum, *count, &per_bucket, None)?
                    }
                }
            }
        }
        Ok(())
    }
}

/// A metric name from a map name: bpftrace's `AT_x` is `@x`, so `x`;
/// characters Prometheus does not allow become `_`.
fn metric_name(prefix: &str, map_name: &str) -> String {
    let base = map_name.strip_prefix("AT_").unwrap_or(map_name);
    let base = if base.is_empty() { "at" } else { base };
    let mut name = String::from(prefix);
    for c in base.chars() {
        name.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, '_');
    }
    // prometheus-client appends `_total` to counters itself.
    name
}

/// The name a user knows the map by.
fn display_name(info: &MapInfo) -> String {
    match info.name.strip_prefix("AT_") {
        Some(rest) => format!("@{rest}"),
        None => info.name.clone(),
    }
}

fn wanted(info: &MapInfo, names: &[String]) -> bool {
    names.is_empty()
        || names.iter().any(|n| {
            n == &info.name
                || n.parse::<u32>() == Ok(info.id)
                || n.strip_prefix('@').is_some_and(|rest| {
                    let full = format!("AT_{rest}");
                    full == info.name || full.chars().take(15).collect::<String>() == info.name
                })
        })
}

/// Maps whose entries are keys and values (not rings, perf arrays, stacks).
fn exportable(map_type: u32) -> bool {
    matches!(
        map_type,
        map_type::HASH
            | map_type::ARRAY
            | map_type::PERCPU_HASH
            | map_type::PERCPU_ARRAY
            | map_type::LRU_HASH
            | map_type::LRU_PERCPU_HASH
    )
}

fn i64_at(bytes: &[u8], off: usize) -> i64 {
    bytes
        .get(off..off + 8)
        .map_or(0, |b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// The value bpftrace would print for one key, per-CPU values combined.
fn combine(shape: Shape, cpus: &[&[u8]]) -> Option<(i64, i64)> {
    let v = |c: &[u8]| -> i64 {
        match c.len() {
            8.. => i64_at(c, 0),
            4 => i32::from_le_bytes(c.try_into().ok().unwrap_or([0; 4])) as i64,
            2 => i16::from_le_bytes(c.try_into().ok().unwrap_or([0; 2])) as i64,
            1 => c[0] as i8 as i64,
            _ => 0,
        }
    };
    Some(match shape {
        Shape::Count
        | Shape::Sum
        | Shape::Value
        | Shape::Hist { .. }
        | Shape::Lhist { .. }
        | Shape::Avg { legacy: true } => {
            (cpus.iter().map(|c| v(c)).fold(0i64, i64::wrapping_add), 0)
        }
        // {total, count}
        Shape::Avg { legacy: false } => (
            cpus.iter().map(|c| i64_at(c, 0)).sum(),
            cpus.iter().map(|c| i64_at(c, 8)).sum(),
        ),
        // 0.17: the largest stored (0xffffffff - x) over the CPUs that set one.
        Shape::Min { legacy: true } => (
            0xffff_ffff - cpus.iter().map(|c| v(c)).filter(|&x| x != 0).max()?,
            0,
        ),
        Shape::Max { legacy: true } => (cpus.iter().map(|c| v(c)).max()?, 0),
        // {value, is_set}
        Shape::Min { legacy: false } => (
            cpus.iter()
                .filter(|c| i64_at(c, 8) != 0)
                .map(|c| i64_at(c, 0))
                .min()?,
            0,
        ),
        Shape::Max { legacy: false } => (
            cpus.iter()
                .filter(|c| i64_at(c, 8) != 0)
                .map(|c| i64_at(c, 0))
                .max()?,
            0,
        ),
    })
}

/// Reads one map and appends its family (or families) to `out`.
struct MapReader<'a> {
    registry: &'a Registry,
    programs: &'a [(u32, Vec<vm::insn::Insn>, Vec<u32>)],
}

struct MapData {
    info: MapInfo,
    shape: MapShape,
    /// (key labels, value) in map order.
    entries: Vec<(Vec<String>, Value)>,
}

impl MapReader<'_> {
    fn read(&self, info: &MapInfo) -> Result<MapData, String> {
        let map = self
            .registry
            .open_map(info.id)
            .map_err(|e| format!("cannot open map {}: {e}", info.id))?;
        let (percpu, nr_cpus) = (map.is_percpu(), map.nr_cpus() as usize);
        let meta = MapMeta {
            id: info.id,
            key_size: info.key_size as usize,
            value_size: info.value_size as usize,
            percpu,
            max_entries: info.max_entries,
        };
        let writers: Vec<Vec<vm::insn::Insn>> = self
            .programs
            .iter()
            .filter(|(_, _, maps)| maps.contains(&info.id))
            .map(|(_, insns, _)| insns.clone())
            .collect();
        let shape = shapes::classify(&meta, &writers).unwrap_or(MapShape {
            shape: Shape::Value,
            keyless: false,
            text_slots: 0,
        });
        let key_size = info.key_size as usize;
        let part_len = if shape.shape.has_key_suffix() {
            key_size.saturating_sub(8)
        } else {
            key_size
        };
        let stride = (info.value_size as usize).div_ceil(8) * 8;
        let mut key: Option<Vec<u8>> = None;
        let mut next = vec![0u8; key_size];
        let mut value = vec![0u8; map.syscall_value_size()];
        // Per key part: bucket index -> count (hists), or field -> value (0.17 avg).
        let mut grouped: BTreeMap<Vec<u8>, Vec<(u64, i64, i64)>> = BTreeMap::new();
        let mut order: Vec<Vec<u8>> = Vec::new();
        for _ in 0..(info.max_entries as u64 * 2 + 16) {
            match map.get_next_key(key.as_deref(), &mut next) {
                Ok(()) => {}
                Err(Errno::ENOENT) => break,
                Err(e) => return Err(format!("walking map {}: {}", info.id, e.name())),
            }
            key = Some(next.clone());
            match map.lookup(&next, &mut value) {
                Ok(()) => {}
                Err(Errno::ENOENT) => continue, // deleted meanwhile
                Err(e) => return Err(format!("reading map {}: {}", info.id, e.name())),
            }
            let cpus: Vec<&[u8]> = if percpu {
                (0..nr_cpus)
                    .filter_map(|c| value.get(c * stride..c * stride + info.value_size as usize))
                    .collect()
            } else {
                vec![&value[..info.value_size as usize]]
            };
            let Some((a, b)) = combine(shape.shape, &cpus) else {
                continue;
            };
            let part = next[..part_len].to_vec();
            let suffix = if shape.shape.has_key_suffix() {
                i64_at(&next, part_len) as u64
            } else {
                0
            };
            if !grouped.contains_key(&part) {
                order.push(part.clone());
            }
            grouped.entry(part).or_default().push((suffix, a, b));
        }
        let mut entries = Vec::new();
        let labels_of = if shape.keyless {
            vec![Vec::new(); order.len()]
        } else {
            shapes::map_key_labels(&order, shape.text_slots)
        };
        for (part, labels) in order.into_iter().zip(labels_of) {
            let values = &grouped[&part];
            let value = match shape.shape {
                Shape::Count => Value::Counter(values[0].1.max(0) as u64),
                Shape::Sum | Shape::Value | Shape::Min { .. } | Shape::Max { .. } => {
                    Value::Gauge(values[0].1)
                }
                Shape::Avg { legacy: false } => avg(values[0].1, values[0].2),
                Shape::Avg { legacy: true } => {
                    let field = |f: u64| values.iter().find(|v| v.0 == f).map_or(0, |v| v.1);
                    avg(field(1), field(0))
                }
                Shape::Hist { k } => histogram(values, |i| shapes::hist_upper(i, k)),
                Shape::Lhist { min, max, step } => {
                    histogram(values, |i| shapes::lhist_upper(i, min, max, step))
                }
            };
            entries.push((labels, value));
        }
        Ok(MapData {
            info: info.clone(),
            shape,
            entries,
        })
    }
}

fn avg(total: i64, count: i64) -> Value {
    let count = count.max(0) as u64;
    Value::Histogram {
        buckets: vec![(f64::INFINITY, count)],
        sum: total as f64,
        count,
    }
}

/// Cumulative buckets up to the last non-empty one, then `+Inf`.
fn histogram(values: &[(u64, i64, i64)], upper: impl Fn(u64) -> Option<i64>) -> Value {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for &(index, n, _) in values {
        *counts.entry(index).or_default() += n.max(0) as u64;
    }
    let last = counts
        .iter()
        .rev()
        .find(|(_, &n)| n > 0)
        .map_or(0, |(&i, _)| i);
    let mut buckets = Vec::new();
    let mut cumulative = 0;
    for index in 0..=last {
        cumulative += counts.get(&index).copied().unwrap_or(0);
        match upper(index) {
            Some(le) => buckets.push((le as f64, cumulative)),
            None => break,
        }
    }
    let total: u64 = counts.values().sum();
    buckets.push((f64::INFINITY, total));
    // bpftrace keeps no sum of the values it buckets.
    Value::Histogram {
        buckets,
        sum: f64::NAN,
        count: total,
    }
}

/// Everything one scrape serves.
fn scrape(registry: &Registry, opts: &Options) -> Scrape {
    let programs: Vec<(u32, Vec<vm::insn::Insn>, Vec<u32>)> = registry
        .progs()
        .into_iter()
        .map(|p| (p.id, vm::insn::decode_all(&p.insns), p.map_ids))
        .collect();
    let reader = MapReader {
        registry,
        programs: &programs,
    };
    let maps = registry.maps();
    let mut data = Vec::new();
    let mut unreadable = 0i64;
    // A loader with `AT_` maps is bpftrace: its other maps (event loss
    // counters, scratch buffers, .rodata) are its own, not the user's.
    let bpftrace_owners: std::collections::HashSet<u32> = maps
        .iter()
        .filter(|m| m.name.starts_with("AT_"))
        .map(|m| m.owner)
        .collect();
    for info in maps
        .iter()
        .filter(|m| exportable(m.map_type) && wanted(m, &opts.maps))
    {
        let internal = bpftrace_owners.contains(&info.owner) && !info.name.starts_with("AT_");
        // libbpf's global-data maps (.rodata, .bss, .data.*) are not maps of keys.
        if internal
            || info.name.contains(".rodata")
            || info.name.contains(".data")
            || info.name.contains(".bss")
        {
            continue;
        }
        match reader.read(info) {
            Ok(d) => data.push(d),
            Err(e) => {
                unreadable += 1;
                eprintln!("userbpf export: {e}");
            }
        }
    }
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // Which maps share a metric name: their series carry map_id to stay apart.
    let mut contributors: HashMap<String, usize> = HashMap::new();
    for d in &data {
        *contributors
            .entry(metric_name(&opts.prefix, &d.info.name))
            .or_default() += 1;
    }
    let mut budget = opts.max_series;
    let mut dropped = 0i64;
    for d in data {
        let kind = match d.shape.shape {
            Shape::Count => Kind::Counter,
            Shape::Hist { .. } | Shape::Lhist { .. } | Shape::Avg { .. } => Kind::Histogram,
            _ => Kind::Gauge,
        };
        let base = metric_name(&opts.prefix, &d.info.name);
        let shared = contributors[&base] > 1;
        // Same name, different kind: the later map gets its id in the name.
        let name = match index.get(&base) {
            Some(&i) if families[i].kind != kind => format!("{base}_map{}", d.info.id),
            _ => base,
        };
        let slot = *index.entry(name.clone()).or_insert_with(|| {
            families.push(Family {
                name: name.clone(),
                help: format!(
                    "bpftrace map {} ({})",
                    display_name(&d.info),
                    describe(d.shape.shape)
                ),
                kind,
                series: Vec::new(),
            });
            families.len() - 1
        });
        let parts = d.entries.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (labels, value) in d.entries {
            if budget == 0 {
                dropped += 1;
                continue;
            }
            budget -= 1;
            let mut set: Labels = Vec::new();
            if shared {
                set.push(("map_id".into(), d.info.id.to_string()));
            }
            match labels.len() {
                0 => {}
                1 if parts == 1 => set.push(("key".into(), labels[0].clone())),
                _ => set.extend(
                    labels
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (format!("key{i}"), v)),
                ),
            }
            families[slot].series.push((set, value));
        }
    }
    families.extend(registry_families(registry, &opts.prefix));
    let p = &opts.prefix;
    families.push(gauge(
        format!("{p}export_series_dropped"),
        "series cut by --max-series in this scrape",
        dropped,
    ));
    families.push(gauge(
        format!("{p}export_maps_unreadable"),
        "maps this scrape could not read",
        unreadable,
    ));
    Scrape { families }
}

fn describe(shape: Shape) -> String {
    match shape {
        Shape::Count => "count()".into(),
        Shape::Sum => "sum()".into(),
        Shape::Hist { k: 0 } => "hist()".into(),
        Shape::Hist { k } => format!("hist(x, {k})"),
        Shape::Lhist { min, max, step } => format!("lhist(x, {min}, {max}, {step})"),
        Shape::Avg { .. } => "avg() or stats()".into(),
        Shape::Min { .. } => "min()".into(),
        Shape::Max { .. } => "max()".into(),
        Shape::Value => "value".into(),
    }
}

fn gauge(name: String, help: &str, v: i64) -> Family {
    Family {
        name,
        help: help.into(),
        kind: Kind::Gauge,
        series: vec![(Vec::new(), Value::Gauge(v))],
    }
}

/// The registry's own state: objects, processes, installed probes.
fn registry_families(registry: &Registry, p: &str) -> Vec<Family> {
    let links = registry.links();
    let owners = registry.owners();
    let mut by_role: BTreeMap<String, i64> = BTreeMap::new();
    let mut installed = Vec::new();
    let mut hits = Vec::new();
    for o in owners.iter().filter(|o| o.alive) {
        let role = if o.role.is_empty() {
            "unknown".to_string()
        } else {
            o.role.clone()
        };
        *by_role.entry(role).or_default() += 1;
        if let Some(status) = AgentStatus::parse(&o.status) {
            installed.push((
                vec![("pid".to_string(), o.pid.to_string())],
                Value::Gauge(status.links.len() as i64),
            ));
            for (link, n) in &status.hits {
                let labels = vec![("probe".to_string(), link.to_string()), ("pid".to_string(), o.pid.to_string())];
                hits.push((labels, Value::Counter(*n)));
            }
        }
    }
    let mut probes: BTreeMap<(String, bool), i64> = BTreeMap::new();
    for l in &links {
        let kind = format!("{:?}", l.kind).to_lowercase();
        *probes.entry((kind, l.enabled)).or_default() += 1;
    }
    vec![
        gauge(
            format!("{p}maps"),
            "maps in the registry",
            registry.map_ids().len() as i64,
        ),
        gauge(
            format!("{p}programs"),
            "programs in the registry",
            registry.prog_ids().len() as i64,
        ),
        Family {
            name: format!("{p}probes"),
            help: "attachments in the registry, by kind and whether enabled".into(),
            kind: Kind::Gauge,
            series: probes
                .into_iter()
                .map(|((kind, enabled), n)| {
                    (
                        vec![
                            ("kind".into(), kind),
                            ("enabled".into(), enabled.to_string()),
                        ],
                        Value::Gauge(n),
                    )
                })
                .collect(),
        },
        Family {
            name: format!("{p}processes"),
            help: "live processes registered with the registry, by role".into(),
            kind: Kind::Gauge,
            series: by_role
                .into_iter()
                .map(|(role, n)| (vec![("role".into(), role)], Value::Gauge(n)))
                .collect(),
        },
        Family {
            name: format!("{p}probe_hits"),
            help: "program runs per probe and process, as each agent last reported them (every 200 ms while it has probes)".into(),
            kind: Kind::Counter,
            series: hits,
        },
        Family {
            name: format!("{p}probes_installed"),
            help: "probes each agent reports installed in its process".into(),
            kind: Kind::Gauge,
            series: installed,
        },
    ]
}

/// The OpenMetrics text of one scrape of the registry at `dir`.
pub fn render(registry: &Registry, opts: &Options) -> String {
    let mut reg = prometheus_client::registry::Registry::default();
    reg.register_collector(Box::new(scrape(registry, opts)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
    out
}

/// `userbpf export`.
pub fn run(opts: Options) -> CliResult {
    let dir = shm_maps::default_dir();
    let registry = Registry::open_existing(&dir).map_err(|e| {
        CliError::with_code(
            exit::ENVIRONMENT,
            format!("cannot open the registry {}: {e}", dir.display()),
        )
        .hint("start a loader first (`userbpf bpftrace …`), or set USERBPF_DIR to its registry")
    })?;
    let server = tiny_http::Server::http(&opts.listen).map_err(|e| {
        CliError::with_code(
            exit::ENVIRONMENT,
            format!("cannot listen on {}: {e}", opts.listen),
        )
    })?;
    let addr = server
        .server_addr()
        .to_ip()
        .map_or(opts.listen.clone(), |a| a.to_string());
    if server
        .server_addr()
        .to_ip()
        .is_some_and(|a| !a.ip().is_loopback())
    {
        eprintln!("userbpf export: listening on {addr}, which is not loopback: anyone who reaches it reads every map");
    }
    eprintln!(
        "userbpf export: serving http://{addr}/metrics for the registry {}",
        dir.display()
    );
    crate::stop::on_interrupt();
    let content_type = tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
    )
    .expect("a valid header");
    while !crate::stop::requested() {
        let request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CliError::new(format!("serving {addr}: {e}"))),
        };
        let path = request.url().split('?').next().unwrap_or("");
        let response = if *request.method() == tiny_http::Method::Get && path == "/metrics" {
            tiny_http::Response::from_string(render(&registry, &opts))
                .with_header(content_type.clone())
        } else {
            tiny_http::Response::from_string("userbpf export serves /metrics\n")
                .with_status_code(404)
        };
        let _ = request.respond(response);
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_names_become_metric_names() {
        assert_eq!(metric_name("userbpf_", "AT_calls"), "userbpf_calls");
        assert_eq!(metric_name("userbpf_", "AT_"), "userbpf_at");
        assert_eq!(metric_name("", "my.map-1"), "my_map_1");
        assert_eq!(metric_name("", "9lives"), "_9lives");
    }

    #[test]
    fn hist_buckets_are_cumulative_and_end_at_inf() {
        // hist: index 1 = [0], 3 = [2,4).
        let Value::Histogram { buckets, count, .. } =
            histogram(&[(1, 2, 0), (3, 5, 0)], |i| shapes::hist_upper(i, 0))
        else {
            panic!()
        };
        assert_eq!(
            buckets,
            vec![(-1.0, 0), (0.0, 2), (1.0, 2), (3.0, 7), (f64::INFINITY, 7)]
        );
        assert_eq!(count, 7);
    }

    #[test]
    fn per_cpu_values_combine_as_bpftrace_prints_them() {
        let a = 5i64.to_le_bytes();
        let b = 7i64.to_le_bytes();
        assert_eq!(combine(Shape::Count, &[&a, &b]), Some((12, 0)));
        assert_eq!(
            combine(Shape::Max { legacy: true }, &[&a, &b]),
            Some((7, 0))
        );
        let set = |v: i64, s: i64| [v.to_le_bytes(), s.to_le_bytes()].concat();
        let (x, y, unset) = (set(5, 1), set(3, 1), set(-9, 0));
        assert_eq!(
            combine(Shape::Min { legacy: false }, &[&x, &y, &unset]),
            Some((3, 0))
        );
        assert_eq!(
            combine(Shape::Max { legacy: false }, &[&x, &y, &unset]),
            Some((5, 0))
        );
        assert_eq!(
            combine(Shape::Avg { legacy: false }, &[&set(10, 2), &set(20, 3)]),
            Some((30, 5))
        );
    }
}
