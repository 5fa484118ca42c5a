//! Requests the agent sends to dockerd: only GETs, always with a `Host`
//! header (Go's net/http answers 400 without one), never half-closed.

use crate::docker::timestamp;
use crate::http::head::ApiVersion;

/// The newest API version this agent knows. The agent speaks
/// `min(daemon's maximum, this)`, so it works with dockerd 20.10 (1.41) and
/// with engines that refuse old versions (29.x accepts only 1.44 and up).
pub const NEWEST_KNOWN_API: ApiVersion = ApiVersion::new(1, 54);

/// Used if `/_ping` has no `Api-Version` header (very old or odd daemons).
pub const FALLBACK_API: ApiVersion = ApiVersion::new(1, 41);

/// The API version to use against a daemon whose `/_ping` said `daemon`.
pub fn negotiate(daemon: Option<ApiVersion>) -> ApiVersion {
    daemon.map_or(FALLBACK_API, |d| d.min(NEWEST_KNOWN_API))
}

/// Longest request target we send (ours are under 300 bytes).
pub const MAX_TARGET: usize = 4096;

/// A request target [`get`] refuses to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTarget(String);

impl std::fmt::Display for BadTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refusing to send a request for {:?}: not a plain path and query", self.0)
    }
}

impl std::error::Error for BadTarget {}

/// The bytes of `GET <target> HTTP/1.1`, if `target` is an origin-form path
/// and query of URL-safe bytes only.
///
/// The Docker socket is root-equivalent: whatever a caller passes (an id
/// from a hostile daemon, a checkpoint file), no byte may end the request
/// line early (space, CR, LF) and start another request on the socket.
pub fn get(target: &str) -> Result<Vec<u8>, BadTarget> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"-._~/?&=%:,+".contains(&b);
    if !target.starts_with('/') || target.len() > MAX_TARGET || !target.bytes().all(safe) {
        let shown: String = target.chars().take(120).collect();
        return Err(BadTarget(shown));
    }
    Ok(format!(
        "GET {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: log-capturer/{}\r\nAccept: */*\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes())
}

/// `s` as one path segment: unreserved bytes as they are, every other byte
/// percent-encoded. Container ids are validated where they enter; this makes
/// a path safe even for a caller that forgot.
pub fn segment(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    if s.bytes().all(plain) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into()
}

/// Paths of the endpoints the agent uses, for one negotiated version.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub version: ApiVersion,
}

/// Options of one logs request.
#[derive(Debug, Clone, Copy)]
pub struct LogsQuery {
    pub follow: bool,
    /// Nanoseconds since the epoch; inclusive.
    pub since: i64,
    /// Ask for at most this many stored messages (dockerd reads them
    /// backwards from the end of the file: cheap), then filter by `since`.
    pub tail: Option<u64>,
}

impl Api {
    pub fn ping() -> &'static str {
        "/_ping"
    }

    pub fn list(&self) -> String {
        format!("/v{}/containers/json?all=1", self.version)
    }

    pub fn inspect(&self, id: &str) -> String {
        format!("/v{}/containers/{}/json", self.version, segment(id))
    }

    /// Container events only, replaying from `since` (ns) if given.
    pub fn events(&self, since: Option<i64>) -> String {
        // filters={"type":["container"]}, percent-encoded.
        let mut p = format!("/v{}/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D", self.version);
        if let Some(ns) = since {
            p.push_str("&since=");
            p.push_str(&timestamp::format_since(ns));
        }
        p
    }

    pub fn logs(&self, id: &str, q: &LogsQuery) -> String {
        let mut p = format!(
            "/v{}/containers/{}/logs?stdout=1&stderr=1&timestamps=1&since={}",
            self.version,
            segment(id),
            timestamp::format_since(q.since)
        );
        if q.follow {
            p.push_str("&follow=1");
        }
        if let Some(k) = q.tail {
            p.push_str(&format!("&tail={k}"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_gets_with_host() {
        let r = String::from_utf8(get("/_ping").unwrap()).unwrap();
        assert!(r.starts_with("GET /_ping HTTP/1.1\r\nHost: docker\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn targets_that_could_smuggle_a_request_are_refused() {
        for bad in [
            "/containers/x HTTP/1.1\r\nHost: docker\r\n\r\nPOST /containers/x/kill",
            "/a\nb",
            "/a b",
            "relative",
            "/\u{e9}",
            "/a#frag",
            "/a\"b",
        ] {
            assert!(get(bad).is_err(), "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_TARGET));
        assert!(get(&long).is_err());
        let api = Api { version: ApiVersion::new(1, 41) };
        for id in ["x HTTP/1.1\r\n\r\nPOST /kill", "../../x", "a/b?c"] {
            let p = api.inspect(id);
            assert!(get(&p).is_ok(), "{p}");
            assert_eq!(p.matches('/').count(), 4, "{p}");
            let q = LogsQuery { follow: true, since: 0, tail: None };
            assert!(get(&api.logs(id, &q)).is_ok());
        }
        assert!(get(&api.events(Some(5))).is_ok());
        assert!(get(&api.list()).is_ok());
        assert!(get(Api::ping()).is_ok());
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate(Some(ApiVersion::new(1, 41))), ApiVersion::new(1, 41));
        assert_eq!(negotiate(Some(ApiVersion::new(1, 99))), NEWEST_KNOWN_API);
        assert_eq!(negotiate(None), FALLBACK_API);
    }

    #[test]
    fn paths() {
        let api = Api { version: ApiVersion::new(1, 41) };
        assert_eq!(
            api.logs("abc", &LogsQuery { follow: true, since: 1_500_000_000, tail: Some(1000) }),
            "/v1.41/containers/abc/logs?stdout=1&stderr=1&timestamps=1&since=1.500000000&follow=1&tail=1000"
        );
        assert_eq!(
            api.events(Some(2_000_000_001)),
            "/v1.41/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D&since=2.000000001"
        );
        assert_eq!(api.list(), "/v1.41/containers/json?all=1");
    }
}
