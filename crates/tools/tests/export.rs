//! `userbpf export` scraped by a real Prometheus server (Debian's), against
//! what stock bpftrace prints at exit for the same run: a count map keyed by
//! a string, a sum, a hist (its buckets and a `histogram_quantile` over
//! them), an lhist and an avg, under bpftrace 0.17, 0.23 and 0.27. Loader,
//! app and exporter run as an ordinary user; Prometheus is started by the
//! test on loopback ports of its own.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::{Bpftrace, Proc, World};

const PROMETHEUS: &str = "/usr/bin/prometheus";

const SCRIPT: &str = "uprobe:{APP}:greet { @calls[str(arg0)] = count(); @times = sum(arg1); }
uprobe:{APP}:six_args { @lat = hist(arg0 * 37); @lin = lhist(arg0, 0, 100, 20); @mean = avg(arg0); }";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A Prometheus server scraping `target` every second; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: scripts/setup.sh installs Debian's prometheus"
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: userbpf\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log file"))
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port }
    }

    /// The instant vector of `query`: (labels, value) per series.
    fn query(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--get",
                &format!("http://127.0.0.1:{}/api/v1/query", self.port),
                "--data-urlencode",
            ])
            .arg(format!("query={query}"))
            .output()
            .expect("curl (Debian package curl)");
        let body: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(_) => return Vec::new(), // not up yet
        };
        assert_eq!(body["status"], "success", "{query}: {body}");
        body["data"]["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = r["value"][1]
                    .as_str()
                    .expect("a value")
                    .parse::<f64>()
                    .expect("a number");
                (labels, value)
            })
            .collect()
    }

    /// Waits until Prometheus has scraped `query` to a vector of `n` series
    /// whose values no longer change between scrapes.
    fn settled(&self, query: &str, n: usize) -> Vec<(BTreeMap<String, String>, f64)> {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut last = Vec::new();
        loop {
            let now = self.query(query);
            if now.len() == n && now == last {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never settled on {n} series of {query}: {now:?}"
            );
            last = now;
            std::thread::sleep(Duration::from_millis(1200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// bpftrace's exit print: `@name[key]: value` lines and hist buckets.
struct Printed {
    scalars: BTreeMap<String, i64>,
    /// Per hist map: (bucket as printed, count).
    hists: BTreeMap<String, Vec<(String, u64)>>,
}

fn parse_bpftrace(stdout: &str) -> Printed {
    let (mut scalars, mut hists) = (
        BTreeMap::new(),
        BTreeMap::<String, Vec<(String, u64)>>::new(),
    );
    let mut current: Option<String> = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix('@') {
            let (name, value) = rest.split_once(':').expect("@name: value");
            let value = value.trim();
            if value.is_empty() {
                current = Some(name.to_string());
            } else {
                current = None;
                scalars.insert(
                    name.to_string(),
                    value
                        .parse()
                        .unwrap_or_else(|_| panic!("a number in {line:?}")),
                );
            }
        } else if let (Some(map), Some(bucket)) = (&current, line.strip_prefix('[')) {
            let (range, rest) = bucket
                .split_once(']')
                .or_else(|| bucket.split_once(')'))
                .expect("a bucket");
            let count = rest
                .split('|')
                .next()
                .expect("count")
                .trim()
                .parse()
                .expect("a count");
            hists
                .entry(map.clone())
                .or_default()
                .push((range.to_string(), count));
        }
    }
    Printed { scalars, hists }
}

/// The largest integer in a printed bucket (`[2, 4)` -> 3, `[8]` -> 8,
/// `[4K, 8K)` -> 8191, `[100, ...)` -> None).
fn bucket_upper(range: &str) -> Option<f64> {
    let unit = |s: &str| -> f64 {
        let s = s.trim();
        let (num, mult) = match s.chars().last() {
            Some('K') => (&s[..s.len() - 1], 1024.0),
            Some('M') => (&s[..s.len() - 1], 1024.0 * 1024.0),
            Some('G') => (&s[..s.len() - 1], 1024.0 * 1024.0 * 1024.0),
            _ => (s, 1.0),
        };
        num.parse::<f64>()
            .unwrap_or_else(|_| panic!("bucket bound {s:?}"))
            * mult
    };
    match range.split_once(',') {
        None => Some(unit(range)),
        Some((_, hi)) if hi.trim() == "..." => None,
        Some((_, hi)) => Some(unit(hi) - 1.0),
    }
}

fn run(release: &str) {
    let world = World::with(
        Bpftrace::release(release).unwrap_or_else(|e| panic!("bpftrace {release}: {e}")),
    )
    .unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let userbpf = world.dir.join("userbpf");
    std::fs::copy(env!("CARGO_BIN_EXE_userbpf"), &userbpf).expect("copy userbpf");
    let mut bpftrace = world.spawn_bpftrace(SCRIPT, &[]).expect("spawn bpftrace");
    world.wait_for_links(&mut bpftrace, 2, Duration::from_secs(60));
    let app = world
        .spawn_app(&["200"])
        .expect("spawn app")
        .wait_timeout(Duration::from_secs(60));
    assert_eq!(app.status, Some(0), "the app: {app:?}");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut exporter: Proc = world
        .spawn_plain(&userbpf, &["export", "--listen", &listen])
        .expect("spawn userbpf export");
    assert!(
        exporter.wait_for_stderr("serving http://", Duration::from_secs(10)),
        "exporter: {}",
        exporter.stderr_now()
    );
    let prometheus_dir = world.dir.join("prometheus");
    std::fs::create_dir(&prometheus_dir).expect("mkdir");
    let prometheus = Prometheus::start(&prometheus_dir, &listen);

    let calls = prometheus.settled("userbpf_calls_total", 4);
    let times = prometheus.settled("userbpf_times", 1);
    let lat_count = prometheus.settled("userbpf_lat_count", 1);
    let mean_sum = prometheus.settled("userbpf_mean_sum", 1);
    let mean_count = prometheus.settled("userbpf_mean_count", 1);
    let lat: BTreeMap<String, f64> = prometheus
        .query("userbpf_lat_bucket")
        .into_iter()
        .map(|(labels, v)| (labels["le"].clone(), v))
        .collect();
    let lin: BTreeMap<String, f64> = prometheus
        .query("userbpf_lin_bucket")
        .into_iter()
        .map(|(labels, v)| (labels["le"].clone(), v))
        .collect();
    let median = prometheus.query("histogram_quantile(0.5, userbpf_lat_bucket)");

    bpftrace.signal(libc::SIGINT);
    let out = bpftrace.wait_timeout(Duration::from_secs(30));
    exporter.signal(libc::SIGINT);
    let exported = exporter.wait_timeout(Duration::from_secs(10));
    assert_eq!(
        exported.status,
        Some(0),
        "export ends on SIGINT: {exported:?}"
    );
    let printed = parse_bpftrace(&out.stdout);
    let log = || std::fs::read_to_string(prometheus_dir.join("prometheus.log")).unwrap_or_default();

    // @calls[alpha]: 50 ... as userbpf_calls_total{key="alpha"}.
    let mut expected_calls: Vec<(String, f64)> = printed
        .scalars
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix("calls[")?.strip_suffix(']')?.to_string(),
                *v as f64,
            ))
        })
        .collect();
    expected_calls.sort_by(|a, b| a.0.cmp(&b.0));
    let mut got_calls: Vec<(String, f64)> =
        calls.iter().map(|(l, v)| (l["key"].clone(), *v)).collect();
    got_calls.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(expected_calls.len(), 4, "bpftrace printed: {}", out.stdout);
    assert_eq!(
        got_calls, expected_calls,
        "count keyed by string; bpftrace: {}",
        out.stdout
    );
    assert_eq!(times[0].1, printed.scalars["times"] as f64, "sum");

    // Every printed hist/lhist bucket, cumulative, is Prometheus' le bucket.
    for (map, series) in [("lat", &lat), ("lin", &lin)] {
        let buckets = &printed.hists[map];
        let mut cumulative = 0u64;
        for (range, count) in buckets {
            cumulative += count;
            let Some(upper) = bucket_upper(range) else {
                continue;
            };
            let got = series
                .iter()
                .find(|(le, _)| le.parse::<f64>().ok() == Some(upper))
                .map(|(_, v)| *v);
            assert_eq!(
                got,
                Some(cumulative as f64),
                "@{map} bucket {range} (le {upper}): {series:?}\nbpftrace:\n{}",
                out.stdout
            );
        }
        assert_eq!(
            series.get("+Inf"),
            Some(&(cumulative as f64)),
            "@{map} +Inf"
        );
    }
    let total: u64 = printed.hists["lat"].iter().map(|(_, n)| n).sum();
    assert_eq!(lat_count[0].1, total as f64, "hist count");

    // histogram_quantile lands in the bucket that holds the median.
    let median = median
        .first()
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no quantile: {}", log()));
    let mut seen = 0;
    let half = total as f64 / 2.0;
    let holding = printed.hists["lat"]
        .iter()
        .find(|(_, n)| {
            seen += n;
            seen as f64 >= half
        })
        .expect("a median bucket");
    let hi = bucket_upper(&holding.0).expect("bounded");
    let lo = printed.hists["lat"]
        .iter()
        .take_while(|b| b.0 != holding.0)
        .last()
        .and_then(|b| bucket_upper(&b.0))
        .unwrap_or(f64::NEG_INFINITY);
    assert!(
        median > lo && median <= hi,
        "median {median} outside ({lo}, {hi}] ({})",
        holding.0
    );

    // @mean: bpftrace prints the integer average of the exported sum and count.
    let avg = (mean_sum[0].1 / mean_count[0].1) as i64;
    assert_eq!(avg, printed.scalars["mean"], "avg = _sum / _count");
}

#[test]
fn prometheus_scrapes_what_bpftrace_0_17_prints() {
    run("0.17");
}

#[test]
fn prometheus_scrapes_what_bpftrace_0_23_prints() {
    run("0.23");
}

#[test]
fn prometheus_scrapes_what_bpftrace_0_27_prints() {
    run("0.27");
}
