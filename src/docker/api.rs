//! Docker's JSON bodies, reduced to the fields the agent acts on. Unknown
//! fields are ignored and missing optional ones default, so newer or older
//! engines that add or drop fields do not break us.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An item of `GET /containers/json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: String,
    /// With a leading `/`.
    #[serde(rename = "Names", default)]
    pub names: Vec<String>,
    #[serde(rename = "Image", default)]
    pub image: String,
    #[serde(rename = "Labels", default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, `paused`…
    #[serde(rename = "State", default)]
    pub state: String,
    /// Creation time, seconds since the epoch.
    #[serde(rename = "Created", default)]
    pub created: i64,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ContainerInspect {
    #[serde(rename = "Id")]
    pub id: String,
    /// With a leading `/`.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// RFC 3339.
    #[serde(rename = "Created", default)]
    pub created: String,
    #[serde(rename = "Config", default)]
    pub config: InspectConfig,
    #[serde(rename = "State", default)]
    pub state: InspectState,
    #[serde(rename = "HostConfig", default)]
    pub host_config: InspectHostConfig,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct InspectConfig {
    #[serde(rename = "Tty", default)]
    pub tty: bool,
    #[serde(rename = "Image", default)]
    pub image: String,
    #[serde(rename = "Labels", default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct InspectState {
    #[serde(rename = "Status", default)]
    pub status: String,
    #[serde(rename = "Running", default)]
    pub running: bool,
    #[serde(rename = "Paused", default)]
    pub paused: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct InspectHostConfig {
    #[serde(rename = "LogConfig", default)]
    pub log_config: LogConfig,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct LogConfig {
    /// `json-file`, `local`, `journald`, `none`…
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// The driver's log-opts (`max-size`, `cache-disabled`…), all strings.
    #[serde(rename = "Config", default, deserialize_with = "null_as_default")]
    pub config: BTreeMap<String, String>,
}

/// One object of the `GET /events` stream.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Event {
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// `start`, `die`, `destroy`… some with a suffix (`exec_start: sh`,
    /// `health_status: healthy`): match with [`Event::action_is`].
    #[serde(rename = "Action", default)]
    pub action: String,
    #[serde(rename = "Actor", default)]
    pub actor: Actor,
    #[serde(rename = "time", default)]
    pub time: i64,
    #[serde(rename = "timeNano", default)]
    pub time_nano: i64,
}

impl Event {
    /// True if the action is `name`, or `name` followed by `:` and details.
    pub fn action_is(&self, name: &str) -> bool {
        self.action == name || self.action.strip_prefix(name).is_some_and(|rest| rest.starts_with(':'))
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Actor {
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Labels plus `image`, `name` (without `/`), `exitCode` on `die`.
    #[serde(rename = "Attributes", default, deserialize_with = "null_as_default")]
    pub attributes: BTreeMap<String, String>,
}

/// The body of an error response: `{"message":"..."}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub message: String,
}

/// The daemon's message from an error body, or the body itself as text if
/// it is not the usual JSON (bounded by the caller's buffer).
pub fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    }
}

/// A full container id as dockerd makes them: 64 lower-case hex digits.
/// Anything else from the daemon (or a checkpoint file) is refused before
/// it can reach a request.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `s` for a message: escaped (no control bytes reach the terminal) and cut
/// to about `max` bytes.
pub fn shown(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// Docker writes `null` for empty label maps.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_from_dockerd() {
        let e: Event = serde_json::from_str(
            r#"{"status":"die","id":"abc","from":"busybox:local","Type":"container","Action":"die",
            "Actor":{"ID":"abc","Attributes":{"exitCode":"0","image":"busybox:local","name":"web"}},
            "scope":"local","time":1795808902,"timeNano":1795808902687468145}"#,
        )
        .unwrap();
        assert!(e.action_is("die"));
        assert_eq!(e.actor.attributes["name"], "web");
        assert_eq!(e.time_nano, 1_795_808_902_687_468_145);
        let h = Event { action: "health_status: healthy".into(), ..e.clone() };
        assert!(h.action_is("health_status") && !h.action_is("health"));
    }

    #[test]
    fn nulls_and_missing_fields() {
        let c: ContainerSummary = serde_json::from_str(r#"{"Id":"x","Names":["/a"],"Labels":null}"#).unwrap();
        assert!(c.labels.is_empty());
        let i: ContainerInspect = serde_json::from_str(
            r#"{"Id":"x","Name":"/a","Config":{"Tty":true,"Labels":null},"State":{"Running":true}}"#,
        )
        .unwrap();
        assert!(i.config.tty && i.state.running);
        let lc = |json: &str| serde_json::from_str::<LogConfig>(json).unwrap();
        assert!(lc(r#"{"Type":"json-file","Config":null}"#).config.is_empty());
        assert!(lc(r#"{"Type":"json-file"}"#).config.is_empty());
        let gelf = lc(r#"{"Type":"gelf","Config":{"cache-disabled":"true","gelf-address":"udp://h:12201"}}"#);
        assert_eq!((gelf.kind.as_str(), gelf.config["cache-disabled"].as_str()), ("gelf", "true"));
    }

    #[test]
    fn container_ids() {
        assert!(is_container_id(&"0123456789abcdef".repeat(4)));
        assert!(!is_container_id(&"0123456789ABCDEF".repeat(4)));
        assert!(!is_container_id("0123456789abcdef"));
        assert!(!is_container_id(&format!("{}\r\n", "a".repeat(62))));
        assert_eq!(shown("a\r\nb", 100), "a\\r\\nb");
        assert_eq!(shown(&"x".repeat(10), 4), "xxxx…");
    }

    #[test]
    fn error_bodies() {
        assert_eq!(error_message(br#"{"message":"No such container: x"}"#), "No such container: x");
        assert_eq!(error_message(b"404 page not found\n"), "404 page not found");
    }
}
