//! What the double holds: accepted entries in arrival order, the dedup
//! index, per-stream newest timestamps, counters, and the fault queue. A
//! push is validated and stored in one step under the lock, so a test that
//! sees the counters move sees the entries too.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::labels;
use crate::proto::RawStream;
use crate::validate::{self, Limits, Reason, Rejection, StructuredMetadata};
use crate::{Entry, EntryKey, Fault, Match, RequestRecord, Stats};

/// A request as far as fault matching needs it.
pub struct Probe<'a> {
    pub push: bool,
    pub tenant: Option<&'a str>,
    pub streams: Option<&'a [RawStream]>,
}

impl Match {
    pub(crate) fn matches(&self, p: &Probe) -> bool {
        match self {
            Match::Any => true,
            Match::Push => p.push,
            Match::Tenant(t) => p.push && p.tenant == Some(t.as_str()),
            Match::LineContains(m) => p
                .streams
                .is_some_and(|ss| ss.iter().flat_map(|s| &s.entries).any(|e| memfind(&e.line, m.as_bytes()))),
        }
    }
}

pub fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The outcome of one push.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The distributor's refusals, in request order.
    pub rejected: Vec<Rejection>,
    /// Word the 400 as Loki 2.8 does (the last refusal alone).
    last_only: bool,
    /// The ingester's answer (entries too far behind), which Loki gives
    /// instead of the distributor's.
    pub ingester: Option<String>,
}

impl Outcome {
    /// The 400 body, if any. An ingester refusal (too far behind) wins over
    /// the distributor's. Loki 2.9 says one refusal as it is, and several
    /// grouped by text, `N errors like: MESSAGE; M errors like: …`; 2.8
    /// gives the last one only.
    pub fn message(&self) -> Option<String> {
        if let Some(m) = &self.ingester {
            return Some(m.clone());
        }
        match self.rejected.as_slice() {
            [] => None,
            [one] => Some(one.message.clone()),
            [.., last] if self.last_only => Some(last.message.clone()),
            all => {
                let mut groups: Vec<(&str, usize)> = Vec::new();
                for r in all {
                    match groups.iter_mut().find(|(m, _)| *m == r.message) {
                        Some((_, n)) => *n += 1,
                        None => groups.push((&r.message, 1)),
                    }
                }
                let parts: Vec<String> =
                    groups.iter().map(|(m, n)| format!("{n} errors like: {m}")).collect();
                Some(parts.join("; "))
            }
        }
    }
}

#[derive(Default)]
struct StreamState {
    newest: Option<i64>,
}

pub struct State {
    pub stats: Stats,
    pub entries: Vec<Entry>,
    pub requests: Vec<RequestRecord>,
    pub faults: Vec<(Match, Fault, u32)>,
    streams: HashMap<String, StreamState>,
    /// (stream labels hash, timestamp, line hash): identical entries seen.
    seen: HashSet<(u64, i64, u64)>,
    /// Times each entry reached validation (with `keep` only).
    pub arrivals: HashMap<EntryKey, u32>,
    /// Keep entries and the dedup index (off for long benchmarks).
    pub keep: bool,
    pub shutdown: bool,
}

fn hash<T: Hash + ?Sized>(t: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

impl State {
    pub fn new(keep: bool) -> State {
        State {
            stats: Stats::default(),
            entries: Vec::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            streams: HashMap::new(),
            seen: HashSet::new(),
            arrivals: HashMap::new(),
            keep,
            shutdown: false,
        }
    }

    /// Take the first queued fault matching this request, if any.
    pub fn take_fault(&mut self, p: &Probe) -> Option<Fault> {
        let i = self.faults.iter().position(|(m, _, n)| *n > 0 && m.matches(p))?;
        let f = self.faults[i].1.clone();
        self.faults[i].2 -= 1;
        if self.faults[i].2 == 0 {
            self.faults.remove(i);
        }
        self.stats.faults_fired += 1;
        Some(f)
    }

    /// Validate and store, as the distributor then the ingester would.
    /// `reject` is an injected refusal of lines containing a marker.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        limits: &Limits,
        sm: StructuredMetadata,
        streams: Vec<RawStream>,
        tenant: Option<&str>,
        request: u64,
        reject: Option<(&str, Reason)>,
        now_ns: i128,
    ) -> Outcome {
        let mut out = Outcome { last_only: sm == StructuredMetadata::Unknown, ..Outcome::default() };
        // Loki parses every stream's labels while it reads the request:
        // one label set that does not parse refuses the whole push, good
        // streams too. (Label limits, duplicate names and `{}` are checked
        // later, per stream: the others are stored.)
        let unparsed =
            streams.iter().filter(|s| !s.entries.is_empty()).find_map(|s| labels::parse(&s.labels).err());
        if let Some(e) = unparsed {
            let n: u64 = streams.iter().map(|s| s.entries.len() as u64).sum();
            self.stats.entries_received += n;
            *self.stats.entries_rejected.entry(Reason::InvalidLabels.as_str().to_owned()).or_default() += n;
            out.rejected.push(Rejection {
                reason: Reason::InvalidLabels,
                message: format!("couldn't parse labels: {e}"),
            });
            return out;
        }
        for s in streams {
            let n = s.entries.len() as u64;
            self.stats.entries_received += n;
            if s.entries.is_empty() {
                continue;
            }
            let name = match labels::validate(&s.labels, limits) {
                Ok((name, _)) => name,
                Err(r) => {
                    *self.stats.entries_rejected.entry(r.reason.as_str().to_owned()).or_default() += n;
                    out.rejected.push(r);
                    continue;
                }
            };
            let name_hash = hash(&name);
            let st = self.streams.entry(name.clone()).or_default();
            // What this stream's ingester sees and refuses.
            let (mut sent, mut behind) = (0usize, Vec::new());
            for e in s.entries {
                if self.keep {
                    let ts = e.ts_ns.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
                    *self.arrivals.entry((name.clone(), ts, e.line.clone())).or_default() += 1;
                }
                let check = match reject {
                    Some((marker, reason)) if memfind(&e.line, marker.as_bytes()) => {
                        Err(validate::injected(limits, reason, &name, &e))
                    }
                    _ => validate::entry(limits, sm, &name, &e, now_ns),
                };
                // Validated timestamps are within days of now: they fit.
                let ts = match check {
                    Ok(()) => e.ts_ns as i64,
                    Err(r) => {
                        *self.stats.entries_rejected.entry(r.reason.as_str().to_owned()).or_default() += 1;
                        out.rejected.push(r);
                        continue;
                    }
                };
                sent += 1;
                if let Some(r) = validate::behind(limits, &name, ts, st.newest) {
                    *self.stats.entries_rejected.entry(r.reason.as_str().to_owned()).or_default() += 1;
                    behind.push(r.message);
                    continue;
                }
                st.newest = Some(st.newest.map_or(ts, |n| n.max(ts)));
                if self.keep && !self.seen.insert((name_hash, ts, hash(&e.line[..]))) {
                    self.stats.duplicates_dropped += 1;
                    continue;
                }
                self.stats.entries_stored += 1;
                self.stats.bytes_stored += e.line.len() as u64;
                self.stats.record_latency((now_ns - i128::from(ts)).clamp(0, i128::from(i64::MAX)) as i64);
                if self.keep {
                    self.entries.push(Entry {
                        labels: name.clone(),
                        ts_ns: ts,
                        line: e.line,
                        metadata: e.metadata,
                        tenant: tenant.map(str::to_owned),
                        request,
                    });
                }
            }
            if !behind.is_empty() && out.ingester.is_none() {
                let tenant = tenant.unwrap_or("fake");
                out.ingester = Some(validate::ingester(&behind, &name, tenant, sent, out.last_only));
            }
        }
        out
    }
}
