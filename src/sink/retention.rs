//! How long dockerd keeps a container's log: while a sink is down, the
//! agent stops reading and dockerd's log files are the buffer, but a
//! driver that rotates (`json-file` or `local` with `max-size`/`max-file`)
//! deletes the oldest file when the newest fills. The history it keeps,
//! divided by the rate the container writes, is how long an outage can
//! last before lines are lost: the *retention headroom*.
//!
//! The estimate is deliberately simple and errs low: the bytes a driver
//! keeps are `max-size × max-file` (the file being written counts among
//! `max-file`), each line is stored with a fixed overhead, and `local`'s
//! compression of rotated files (which keeps more) is ignored.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Bytes `json-file` stores per line beyond the message:
/// `{"log":"…\n","stream":"stdout","time":"2026-11-29T17:09:07.123456789Z"}\n`.
pub const JSON_FILE_OVERHEAD: u64 = 70;
/// The same for `local` (a protobuf entry with a timestamp, a stream name
/// and a length prefix).
pub const LOCAL_OVERHEAD: u64 = 32;

/// What a container's logging driver keeps, if it rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Bytes of log history kept at most.
    pub bytes: u64,
    /// Bytes stored per line beyond the message.
    pub overhead: u64,
}

/// The retention of a driver with these log-opts; `None` if it does not
/// rotate (or is not read from local files: nothing to estimate).
pub fn of_driver(kind: &str, opts: &BTreeMap<String, String>) -> Option<Retention> {
    let size = opts.get("max-size").map(String::as_str);
    let files = opts.get("max-file").and_then(|f| f.trim().parse::<u64>().ok());
    match kind {
        // Rotates only with max-size; max-file defaults to 1.
        "json-file" => {
            let size = parse_size(size?)?;
            Some(Retention {
                bytes: size.saturating_mul(files.unwrap_or(1).max(1)),
                overhead: JSON_FILE_OVERHEAD,
            })
        }
        // Always rotates: 20m × 5 by default.
        "local" => {
            let size = size.map_or(Some(20 << 20), parse_size)?;
            Some(Retention {
                bytes: size.saturating_mul(files.unwrap_or(5).max(1)),
                overhead: LOCAL_OVERHEAD,
            })
        }
        _ => None,
    }
}

/// Docker's sizes (`10m`, `100k`, `1g`, `512`, `1.5m`): binary multiples,
/// as its `units.RAMInBytes` reads them. `-1` and unreadable values: no
/// limit.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let n: f64 = s[..digits].parse().ok()?;
    let unit = s[digits..].trim().trim_end_matches('b').trim_end_matches('i');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let v = n * mult as f64;
    (v >= 1.0).then_some(v as u64)
}

/// A container's write rate in stored bytes per second, measured while its
/// stream is read (a paused stream says nothing about its rate).
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    last: Option<(Instant, u64)>,
    /// Bytes per second, smoothed.
    pub rate: f64,
}

/// Shortest interval a rate sample is taken over.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

impl RateMeter {
    /// `total`: stored bytes read so far. `flowing`: the stream was read
    /// since the last sample (not paused by a full queue).
    pub fn sample(&mut self, total: u64, flowing: bool, now: Instant) {
        match self.last {
            Some((at, _)) if now.duration_since(at) < SAMPLE_EVERY => return,
            Some((at, bytes)) if flowing => {
                let r = total.saturating_sub(bytes) as f64 / now.duration_since(at).as_secs_f64();
                self.rate = if self.rate == 0.0 { r } else { 0.7 * self.rate + 0.3 * r };
            }
            _ => {}
        }
        self.last = Some((now, total));
    }

    /// Seconds of history `retention` holds at this rate; `None` while the
    /// rate is unknown or zero.
    pub fn headroom(&self, retention: &Retention) -> Option<Duration> {
        (self.rate > 0.0).then(|| Duration::from_secs_f64((retention.bytes as f64 / self.rate).min(1e9)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn drivers() {
        assert_eq!(of_driver("json-file", &opts(&[])), None, "json-file without max-size never rotates");
        assert_eq!(
            of_driver("json-file", &opts(&[("max-size", "10m"), ("max-file", "3")])),
            Some(Retention { bytes: 30 << 20, overhead: JSON_FILE_OVERHEAD })
        );
        assert_eq!(of_driver("json-file", &opts(&[("max-size", "100k")])).unwrap().bytes, 100 << 10);
        assert_eq!(of_driver("json-file", &opts(&[("max-size", "-1")])), None);
        assert_eq!(of_driver("local", &opts(&[])).unwrap().bytes, 100 << 20);
        assert_eq!(
            of_driver("local", &opts(&[("max-size", "1m"), ("max-file", "2")])).unwrap().bytes,
            2 << 20
        );
        assert_eq!(of_driver("journald", &opts(&[("max-size", "1m")])), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("1.5m"), Some(3 << 19));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn rate_and_headroom() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        m.sample(0, true, t0);
        m.sample(5_000, true, t0 + Duration::from_secs(5));
        assert_eq!(m.rate, 0.0, "too soon for a sample");
        m.sample(10_000, true, t0 + Duration::from_secs(10));
        assert_eq!(m.rate, 1_000.0);
        // Paused: the interval is skipped, the rate kept.
        m.sample(10_000, false, t0 + Duration::from_secs(20));
        assert_eq!(m.rate, 1_000.0);
        let r = Retention { bytes: 60_000, overhead: 0 };
        assert_eq!(m.headroom(&r), Some(Duration::from_secs(60)));
        assert_eq!(RateMeter::default().headroom(&r), None);
    }
}
