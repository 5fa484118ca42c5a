//! What the agent knows about one container, and the small policies around
//! following it: which containers to follow, retry backoff, jitter.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::agent::resume::Resume;
use crate::cli::{LabelSelector, NamePattern};
use crate::record;

/// Where a container's first stream starts when there is no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPoint {
    /// At a fixed time (the agent's first run: "from now").
    At(i64),
    /// From the container's creation (`Created`): dockerd stamps its first
    /// lines before it records `State.StartedAt` (seen 1.8 ms before), so
    /// the start time would miss them.
    ContainerCreated,
}

/// The follow state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Not followed now: stopped and drained, excluded, or never started.
    Idle,
    /// An inspect call is under way (conn key).
    Inspecting(usize),
    /// A log stream is open (conn key).
    Streaming(usize),
    /// Waiting to retry after an error.
    Backoff,
    /// A permanent error (e.g. a logging driver that cannot be read):
    /// reported once, not retried until the container starts again.
    Failed,
    /// Wanted, but the stream budget is used up: waits for a free slot.
    Waiting,
}

/// Where a container that stopped is in shipping its very last output.
///
/// dockerd can end a follow stream when the container exits before it has
/// stored the container's last line if that line has no newline (seen on
/// 20.10: stored 100-200 ms after `FinishedAt`, missing from the stream 7
/// times in 12). The `die` event comes only once logging is closed, so
/// after it one non-follow read from the resume point gets that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// Running, or nothing pending.
    #[default]
    None,
    /// Its follow stream ended with the container stopped; waiting for the
    /// `die` event (or a fallback deadline) before the final read.
    AwaitingDie,
    /// The final, non-follow read is open or about to be.
    FinalRead,
}

#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub tty: bool,
    pub running: bool,
    pub follow: Follow,
    /// None until the first inspect decides where to start. Where its next
    /// stream resumes: past every line read.
    pub resume: Option<Resume>,
    /// With a sink: the resume point past the lines the sink acknowledged,
    /// while some of its lines wait for an acknowledgement (`None` when
    /// none do, and always with the file output).
    pub acked: Option<Resume>,
    /// Its part in the sink (Loki streams, lines not yet acknowledged).
    pub sink: crate::agent::sink::ContainerSink,
    pub start: StartPoint,
    /// Its stream ended with the container stopped: all shipped.
    pub drained: bool,
    pub backoff: Backoff,
    /// Messages per second over the last stream, for sizing `tail`.
    pub rate: f64,
    /// The next open skips `tail` (the tail window fell short).
    pub catchup_next: bool,
    /// The `"container_id":…,"container_name":…,"image":…` fragment of
    /// each of its records' JSON, encoded once.
    pub identity_json: Vec<u8>,
    /// Its stream just ended cleanly (why, for the metrics if it reopens):
    /// the inspect under way decides between reopening and drained.
    pub reopen_reason: Option<crate::metrics::ReconnectReason>,
    /// It holds one of the stream budget's slots (Inspecting, Streaming,
    /// Backoff, or between two of those).
    pub slot: bool,
    /// When it was created (ns; from the list, or its start event): who gets
    /// a slot first when there are not enough.
    pub created_ns: i64,
    /// When its log begins: its creation, from its inspect (Docker's
    /// clock). No line of its log is older.
    pub log_start: Option<i64>,
    /// The `die` event of its current run has been seen.
    pub died: bool,
    pub ending: Ending,
    /// The stream that just ended was following a running container.
    pub ended_live: bool,
    /// Its retry or final-read timer, while in `Follow::Backoff` (for the
    /// loop's invariants: a container waiting on nothing would wait forever).
    pub wake: Option<crate::timer_wheel::TimerId>,
}

impl Container {
    pub fn new(id: &str, start: StartPoint) -> Self {
        let mut c = Self {
            id: id.to_owned(),
            name: String::new(),
            image: String::new(),
            tty: false,
            running: false,
            follow: Follow::Idle,
            resume: None,
            acked: None,
            sink: Default::default(),
            start,
            drained: false,
            backoff: Backoff::default(),
            rate: 0.0,
            catchup_next: false,
            identity_json: Vec::new(),
            reopen_reason: None,
            slot: false,
            created_ns: 0,
            log_start: None,
            died: false,
            ending: Ending::None,
            ended_live: false,
            wake: None,
        };
        c.set_identity("", "");
        c
    }

    /// What a checkpoint may record for it: never past a line that was not
    /// delivered (written to the output, or acknowledged by the sink).
    pub fn checkpoint_resume(&self) -> Option<&Resume> {
        self.acked.as_ref().or(self.resume.as_ref())
    }

    /// Drained, and every line of it delivered.
    pub fn checkpoint_drained(&self) -> bool {
        self.drained && self.acked.is_none()
    }

    /// Set name and image and precompute the record fields they go into.
    pub fn set_identity(&mut self, name: &str, image: &str) {
        self.name = name.trim_start_matches('/').to_owned();
        self.image = image.to_owned();
        let mut e = Vec::with_capacity(140 + self.name.len() + self.image.len());
        e.extend_from_slice(b"\"container_id\":\"");
        record::escape_json_str(&mut e, self.id.as_bytes());
        e.extend_from_slice(b"\",\"container_name\":\"");
        record::escape_json_str(&mut e, self.name.as_bytes());
        e.extend_from_slice(b"\",\"image\":\"");
        record::escape_json_str(&mut e, self.image.as_bytes());
        e.push(b'"');
        self.identity_json = e;
    }
}

/// Which containers to follow, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub include_labels: Vec<LabelSelector>,
    pub exclude_labels: Vec<LabelSelector>,
    pub include_names: Vec<NamePattern>,
}

impl Filters {
    pub fn admits(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.include_labels.iter().all(|s| s.matches(labels))
            && !self.exclude_labels.iter().any(|s| s.matches(labels))
            && (self.include_names.is_empty() || self.include_names.iter().any(|p| p.matches(name)))
    }
}

/// Exponential backoff with jitter: 250 ms doubling to 30 s, each wait drawn
/// from [d/2, d] so that many streams failing together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    cap: Duration,
}

pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

impl Default for Backoff {
    fn default() -> Self {
        Self::with_cap(BACKOFF_CAP)
    }
}

impl Backoff {
    /// Doubling from [`BACKOFF_BASE`] up to `cap`, with jitter.
    pub fn with_cap(cap: Duration) -> Self {
        Self { failures: 0, cap }
    }

    pub fn next(&mut self, rng: &mut Rng) -> Duration {
        let exp = BACKOFF_BASE.saturating_mul(1 << self.failures.min(16)).min(self.cap);
        self.failures = self.failures.saturating_add(1);
        exp.mul_f64(0.5 + 0.5 * rng.unit())
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// xorshift64*: jitter needs spread, not cryptographic strength.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// In [0, n) (a slight bias for huge n: for tests and jitter, not secrets).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// One of `xs`, at random.
    pub fn pick<'a, T: ?Sized>(&mut self, xs: &[&'a T]) -> &'a T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The id of the container this agent runs in, if any, so it never follows
/// its own output (a feedback loop). Docker bind-mounts
/// `/var/lib/docker/containers/<id>/hostname` (and resolv.conf, hosts) into
/// every container, which shows in mountinfo under both cgroup versions.
pub fn own_container_id() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    find_container_id(&info)
}

fn find_container_id(mountinfo: &str) -> Option<String> {
    for line in mountinfo.lines() {
        let Some(pos) = line.find("/containers/") else {
            continue;
        };
        let rest = &line[pos + "/containers/".len()..];
        let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if id.len() == 64 && rest[64..].starts_with("/hostname") {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_label, parse_name_pattern};

    #[test]
    fn filters() {
        let mut labels = BTreeMap::new();
        labels.insert("app".into(), "web".into());
        labels.insert("tier".into(), "front".into());
        let none = Filters::default();
        assert!(none.admits("x", &labels));
        let f = Filters {
            include_labels: vec![parse_label("app=web").unwrap()],
            exclude_labels: vec![parse_label("skip").unwrap()],
            include_names: vec![parse_name_pattern("web-*").unwrap()],
        };
        assert!(f.admits("web-1", &labels));
        assert!(!f.admits("db-1", &labels));
        labels.insert("skip".into(), "".into());
        assert!(!f.admits("web-1", &labels));
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut rng = Rng::new(7);
        let mut b = Backoff::default();
        let first = b.next(&mut rng);
        assert!(first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE);
        for _ in 0..40 {
            assert!(b.next(&mut rng) <= BACKOFF_CAP);
        }
        assert!(b.next(&mut rng) >= BACKOFF_CAP / 2);
        b.reset();
        assert!(b.next(&mut rng) <= BACKOFF_BASE);
    }

    #[test]
    fn record_fields_are_escaped() {
        let mut c = Container::new(&"a".repeat(64), StartPoint::ContainerCreated);
        c.set_identity("/we\"b", "busybox:local");
        let s = String::from_utf8(c.identity_json.clone()).unwrap();
        assert_eq!(
            s,
            format!(
                r#""container_id":"{}","container_name":"we\"b","image":"busybox:local""#,
                "a".repeat(64)
            )
        );
    }

    #[test]
    fn own_id_from_mountinfo() {
        let id = "0123456789abcdef".repeat(4);
        let info = format!(
            "100 90 0:50 / / rw - overlay overlay rw\n\
             543 530 253:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(find_container_id(&info), Some(id));
        assert_eq!(find_container_id("1 2 3:4 / / rw - ext4 /dev/vda rw\n"), None);
    }
}
