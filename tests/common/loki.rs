//! The agent shipping to the Loki double: a scenario (a Docker double, a
//! Loki double, a state directory), the lines Docker holds as the ground
//! truth, and what Loki got compared with them: missing, unexpected,
//! repeated (counted by the double's arrivals, apart from Loki's dedup),
//! and labels, metadata and timestamps that are not what they should be.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use loki_double as lk;

use crate::common::{wait_for, Agent, ContainerSpec, Double, Stream, TempDir, Writer};

/// Deadline for anything the agent should do in a healthy run.
pub const T: Duration = Duration::from_secs(60);

/// A line Docker holds: what Loki must end up with.
#[derive(Clone, Debug)]
pub struct Want {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub stream: &'static str,
    pub ts_ns: i64,
    pub line: Vec<u8>,
}

/// (container name, stream, timestamp, line): an entry's identity as the
/// tests see it.
pub type Key = (String, String, i64, Vec<u8>);

impl Want {
    pub fn key(&self) -> Key {
        (self.name.clone(), self.stream.to_owned(), self.ts_ns, self.line.clone())
    }
}

fn key_of(labels: &str, ts_ns: i64, line: &[u8]) -> Key {
    let l: BTreeMap<String, String> = lk::parse_labels(labels).unwrap_or_default().into_iter().collect();
    let get = |k: &str| l.get(k).cloned().unwrap_or_default();
    (get("container"), get("stream"), ts_ns, line.to_vec())
}

/// What Loki got, compared with what Docker holds.
#[derive(Debug, Default)]
pub struct Delivery {
    pub wanted: usize,
    pub stored: usize,
    pub missing: Vec<Key>,
    /// Entries stored that Docker does not hold (or under the wrong
    /// container/stream/timestamp/line).
    pub unexpected: Vec<Key>,
    /// Entries that arrived more than once, with how many times, and the
    /// request that first stored them (0 if none did).
    pub repeated: Vec<(Key, u32, u64)>,
    /// Wrong labels, metadata: first problems, described.
    pub bad: Vec<String>,
}

impl Delivery {
    /// One paragraph for a failure message.
    pub fn summary(&self) -> String {
        let short = |k: &Key| format!("{}/{} {} {:?}", k.0, k.1, k.2, String::from_utf8_lossy(&k.3));
        format!(
            "wanted {}, stored {}, missing {} (first: {:?}), unexpected {} (first: {:?}), repeated {} \
             (first: {:?}), bad {} (first: {:?})",
            self.wanted,
            self.stored,
            self.missing.len(),
            self.missing.iter().take(3).map(short).collect::<Vec<_>>(),
            self.unexpected.len(),
            self.unexpected.iter().take(3).map(short).collect::<Vec<_>>(),
            self.repeated.len(),
            self.repeated
                .iter()
                .take(3)
                .map(|(k, n, r)| format!("{} x{n} (req {r})", short(k)))
                .collect::<Vec<_>>(),
            self.bad.len(),
            self.bad.iter().take(3).collect::<Vec<_>>(),
        )
    }

    /// Repeats whose first storing request is not one of `allowed`.
    pub fn repeats_outside(&self, allowed: &HashSet<u64>) -> Vec<&(Key, u32, u64)> {
        self.repeated.iter().filter(|(_, _, r)| !allowed.contains(r)).collect()
    }
}

/// One container of a scenario.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub total: u64,
}

/// A Docker double, a Loki double and a state directory.
pub struct Scenario {
    pub docker: Double,
    pub loki: lk::Double,
    pub dir: TempDir,
    pub containers: Vec<Container>,
    pub specs: HashMap<String, ContainerSpec>,
}

/// Numbered lines (`<name> <seq> <stream> x…`), every third on stderr.
pub fn writer(rate: f64, total: u64) -> Writer {
    Writer { lines_per_sec: rate, stderr_every: 3, line_len: 60, max_lines: Some(total) }
}

/// This machine's name, as the agent's `host` label should carry it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned()
}

impl Scenario {
    pub fn new(tag: &str) -> Scenario {
        Scenario::with_loki(tag, lk::Config::default())
    }

    pub fn with_loki(tag: &str, cfg: lk::Config) -> Scenario {
        Scenario {
            docker: Double::start(crate::common::Config::in_temp_dir()).unwrap(),
            loki: lk::Double::start(cfg).unwrap(),
            dir: TempDir::new(tag),
            containers: Vec::new(),
            specs: HashMap::new(),
        }
    }

    /// Start the agent shipping to the Loki double at `url` (its own by
    /// default), batches sent after 200 ms, and wait until it follows
    /// Docker (containers started from then on are shipped from their
    /// first line).
    pub fn agent_to(&self, url: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut args = vec!["--loki", url, "--loki-batch-wait", "200ms"];
        args.extend_from_slice(extra);
        let agent = Agent::start_sink(self.docker.socket(), &self.dir.0, &args, env);
        assert!(
            wait_for(T, || agent.metric("log_capturer_docker_up") == 1.0),
            "the agent never followed Docker:\n{}",
            agent.stderr()
        );
        agent
    }

    pub fn agent(&self, extra: &[&str]) -> Agent {
        self.agent_to(&self.loki.url(), extra, &[])
    }

    /// Create and start containers (each with a writer of `max_lines`).
    pub fn start(&mut self, specs: Vec<ContainerSpec>) {
        for spec in specs {
            let total = spec.writer.as_ref().and_then(|w| w.max_lines).expect("a writer with max_lines");
            let name = spec.name.clone();
            let id = self.docker.create_and_start(spec.clone());
            self.specs.insert(id.clone(), spec);
            self.containers.push(Container { id, name, total });
        }
    }

    /// Lines each container wrote so far, then whether all have written
    /// every line.
    pub fn written(&self) -> u64 {
        self.containers.iter().map(|c| self.docker.logs(&c.id).len() as u64).sum()
    }

    pub fn total(&self) -> u64 {
        self.containers.iter().map(|c| c.total).sum()
    }

    pub fn wait_written(&self, timeout: Duration) -> bool {
        wait_for(timeout, || self.written() >= self.total())
    }

    /// Every line Docker holds of the scenario's containers.
    pub fn truth(&self) -> Vec<Want> {
        let mut v = Vec::new();
        for c in &self.containers {
            let spec = &self.specs[&c.id];
            for (ts_ns, stream, mut line) in self.docker.logs(&c.id) {
                while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    line.pop();
                }
                v.push(Want {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    image: spec.image.clone(),
                    labels: spec.labels.clone(),
                    stream: match stream {
                        Stream::Stdout => "stdout",
                        Stream::Stderr => "stderr",
                    },
                    ts_ns,
                    line,
                });
            }
        }
        v
    }

    /// Wait until the double has stored `n` entries.
    pub fn wait_stored(&self, n: u64, timeout: Duration) -> bool {
        self.loki.wait_until(timeout, |s| s.entries_stored >= n)
    }

    /// Wait until every line was written and stored (less `refused`, which
    /// Loki refuses for good).
    pub fn wait_delivered(&self, refused: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        self.wait_written(timeout)
            && self.wait_stored(
                self.total() - refused,
                deadline.saturating_duration_since(std::time::Instant::now()),
            )
    }

    /// Compare what Loki holds with what Docker holds. `static_labels`
    /// are the labels every stream must carry besides the agent's own.
    pub fn delivery(&self, static_labels: &[(&str, &str)]) -> Delivery {
        let truth = self.truth();
        let entries = self.loki.entries();
        let arrivals = self.loki.arrivals();
        let mut d = Delivery { wanted: truth.len(), stored: entries.len(), ..Delivery::default() };
        let want: HashMap<Key, &Want> = truth.iter().map(|w| (w.key(), w)).collect();
        let mut got: HashMap<Key, &lk::Entry> = HashMap::new();
        let host = hostname();
        for e in &entries {
            let k = key_of(&e.labels, e.ts_ns, &e.line);
            let Some(w) = want.get(&k) else {
                d.unexpected.push(k);
                continue;
            };
            got.insert(k, e);
            if d.bad.len() >= 20 {
                continue;
            }
            let labels: BTreeMap<String, String> =
                lk::parse_labels(&e.labels).unwrap_or_default().into_iter().collect();
            let mut expect: BTreeMap<String, String> = BTreeMap::new();
            expect.insert("host".into(), host.clone());
            expect.insert("container".into(), w.name.clone());
            expect.insert("stream".into(), w.stream.into());
            for (docker, loki) in [
                ("com.docker.compose.project", "compose_project"),
                ("com.docker.compose.service", "compose_service"),
            ] {
                if let Some(v) = w.labels.get(docker) {
                    expect.insert(loki.into(), v.clone());
                }
            }
            for (k, v) in static_labels {
                expect.insert((*k).into(), (*v).into());
            }
            if labels != expect {
                d.bad.push(format!("labels {} for {}, want {expect:?}", e.labels, w.name));
            }
            if e.meta("container_id") != Some(w.id.as_str()) || e.meta("image") != Some(w.image.as_str()) {
                d.bad.push(format!(
                    "metadata {:?} for {}, want container_id {} and image {}",
                    e.metadata, w.name, w.id, w.image
                ));
            }
        }
        for w in &truth {
            if !got.contains_key(&w.key()) {
                d.missing.push(w.key());
            }
        }
        for ((labels, ts, line), n) in arrivals {
            if n > 1 {
                let k = key_of(&labels, ts, &line);
                let req = got.get(&k).map_or(0, |e| e.request);
                d.repeated.push((k, n, req));
            }
        }
        d.repeated.sort();
        d
    }
}

/// Samples of one family: `family` alone or `family{…}`, summed.
pub fn family_sum(m: &BTreeMap<String, f64>, family: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| *k == family || k.strip_prefix(family).is_some_and(|r| r.starts_with('{')))
        .map(|(_, v)| v)
        .sum()
}

/// One sample, 0 when absent (a labelled counter appears on first use).
pub fn sample(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// A small seeded RNG (xorshift64*): the moments of kills, reproducible
/// from the printed seed.
pub struct Rng(u64);

impl Rng {
    /// `LC_SEED` or the clock; printed so that a failure can be replayed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("LC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        say(&format!("{test}: LC_SEED={seed}"));
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi` (milliseconds).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Straight to stderr: libtest captures `eprintln!` of passing tests.
pub fn say(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Seconds from an env var, or a default.
pub fn secs_from_env(var: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or(default))
}

/// A file in `dir` with `text`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}
