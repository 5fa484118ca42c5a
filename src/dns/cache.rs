//! A small cache of DNS answers, so that reconnecting to a sink in a tight
//! retry loop does not ask the DNS server every time.
//!
//! Only answers that came from DNS are kept (IP literals, `/etc/hosts`
//! and `localhost` cost nothing to look up again, and the hosts file may
//! be edited), for their TTL clamped to [`MIN_TTL`, `MAX_TTL`]: a TTL of 0
//! is common behind load balancers and would mean a query per connection
//! attempt, and a day-long TTL would keep a moved sink's old address. A
//! caller whose connections to every cached address fail should
//! [`Cache::forget`] the name, so that the next attempt asks again. Failures
//! are not cached: the lookup's own deadline already paces them.

use std::time::{Duration, Instant};

use super::resolver::{Family, Resolved, Source};

pub const MIN_TTL: Duration = Duration::from_secs(5);
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// Entries kept; when full, the one that expires first makes room.
pub const MAX_ENTRIES: usize = 64;

#[derive(Debug)]
struct Entry {
    name: String,
    family: Family,
    resolved: Resolved,
    expires: Instant,
}

#[derive(Debug, Default)]
pub struct Cache {
    entries: Vec<Entry>,
}

/// Names are compared as DNS does: ASCII case and a trailing dot aside.
fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached answer for `name` and `family`, if it has not expired.
    pub fn get(&mut self, name: &str, family: Family, now: Instant) -> Option<Resolved> {
        self.entries.retain(|e| e.expires > now);
        let name = key(name);
        let e = self.entries.iter().find(|e| e.family == family && e.name == name)?;
        Some(e.resolved.clone())
    }

    /// Keep a lookup's answer (only one from DNS; see the module doc).
    pub fn insert(&mut self, name: &str, family: Family, resolved: &Resolved, now: Instant) {
        let (Source::Dns { .. }, Some(ttl)) = (&resolved.source, resolved.ttl) else { return };
        let name = key(name);
        self.entries.retain(|e| e.expires > now && !(e.family == family && e.name == name));
        if self.entries.len() >= MAX_ENTRIES {
            let soonest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].expires);
            self.entries.swap_remove(soonest.expect("the cache is full"));
        }
        let expires = now + ttl.clamp(MIN_TTL, MAX_TTL);
        self.entries.push(Entry { name, family, resolved: resolved.clone(), expires });
    }

    /// Drop every answer for `name`.
    pub fn forget(&mut self, name: &str) {
        let name = key(name);
        self.entries.retain(|e| e.name != name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::Name;

    fn dns(ip: &str, ttl: u64) -> Resolved {
        Resolved {
            addrs: vec![ip.parse().unwrap()],
            ttl: Some(Duration::from_secs(ttl)),
            source: Source::Dns {
                server: "10.0.0.2:53".parse().unwrap(),
                name: Name::from_text("x").unwrap(),
            },
        }
    }

    #[test]
    fn ttl_is_clamped_and_honoured() {
        let t0 = Instant::now();
        let mut c = Cache::new();
        c.insert("Loki.Example.", Family::Any, &dns("10.0.0.7", 0), t0);
        assert_eq!(c.get("loki.example", Family::Any, t0 + Duration::from_secs(4)), Some(dns("10.0.0.7", 0)));
        assert_eq!(c.get("loki.example", Family::V4, t0), None, "per family");
        assert_eq!(c.get("loki.example", Family::Any, t0 + MIN_TTL), None, "TTL 0 kept MIN_TTL");
        assert!(c.is_empty(), "expired entries are dropped");

        c.insert("loki.example", Family::Any, &dns("10.0.0.7", 86_400), t0);
        assert!(c.get("LOKI.example", Family::Any, t0 + MAX_TTL - Duration::from_secs(1)).is_some());
        assert_eq!(c.get("loki.example", Family::Any, t0 + MAX_TTL), None, "a day's TTL kept MAX_TTL");

        c.insert("loki.example", Family::Any, &dns("10.0.0.7", 60), t0);
        c.insert("loki.example", Family::Any, &dns("10.0.0.8", 60), t0);
        assert_eq!(c.len(), 1, "a new answer replaces the old");
        assert_eq!(c.get("loki.example", Family::Any, t0).unwrap().addrs[0].to_string(), "10.0.0.8");
        c.forget("Loki.Example");
        assert_eq!(c.get("loki.example", Family::Any, t0), None);
    }

    #[test]
    fn only_dns_answers_are_kept() {
        let t0 = Instant::now();
        let mut c = Cache::new();
        let hosts = Resolved { addrs: vec!["10.0.0.1".parse().unwrap()], ttl: None, source: Source::Hosts };
        c.insert("a", Family::Any, &hosts, t0);
        let literal = Resolved { source: Source::Literal, ..hosts };
        c.insert("10.0.0.1", Family::Any, &literal, t0);
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_the_soonest_to_expire_goes_first() {
        let t0 = Instant::now();
        let mut c = Cache::new();
        for i in 0..MAX_ENTRIES as u64 {
            c.insert(&format!("n{i}"), Family::Any, &dns("10.0.0.1", 100 + i), t0);
        }
        c.insert("late", Family::Any, &dns("10.0.0.2", 200), t0);
        assert_eq!(c.len(), MAX_ENTRIES);
        assert_eq!(c.get("n0", Family::Any, t0), None, "the soonest to expire made room");
        assert!(c.get("n1", Family::Any, t0).is_some());
        assert!(c.get("late", Family::Any, t0).is_some());
    }
}
