//! Routing and the JSON bodies of the Docker API: what dockerd 20.10 writes,
//! in its field order, with the fields a client may read (plus enough of the
//! rest that inspect is over 2 KiB and so chunked, as in the captures).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::http::json_str;
use crate::state::{Container, Event, Filters, State, Status};
use crate::time;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Ping,
    Version,
    List,
    Inspect(String),
    Logs(String),
    Events,
    NotFound,
}

/// Split an optional `/vX.Y` prefix off the path (moby's router accepts
/// `/v{version:[0-9.]+}/...` and the bare path) and route the rest.
pub(crate) fn route(path: &str) -> (Option<&str>, Route) {
    let mut version = None;
    let mut rest = path;
    if let Some(after) = path.strip_prefix("/v") {
        let n = after.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        if n > 0 && after[n..].starts_with('/') {
            version = Some(&after[..n]);
            rest = &after[n..];
        }
    }
    let r = match rest {
        "/_ping" => Route::Ping,
        "/version" => Route::Version,
        "/containers/json" => Route::List,
        "/events" => Route::Events,
        _ => match rest.strip_prefix("/containers/").and_then(|s| s.rsplit_once('/')) {
            Some((id, "json")) if !id.is_empty() && !id.contains('/') => Route::Inspect(id.to_owned()),
            Some((id, "logs")) if !id.is_empty() && !id.contains('/') => Route::Logs(id.to_owned()),
            _ => Route::NotFound,
        },
    };
    (version, r)
}

/// A `1.41`-style version as a comparable pair (`1` is `1.0`).
pub(crate) fn parse_version(v: &str) -> Option<(u16, u16)> {
    let mut it = v.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = match it.next() {
        Some(m) => m.parse().ok()?,
        None => 0,
    };
    Some((major, minor))
}

/// moby's version middleware: the error for a version outside the range.
pub(crate) fn check_version(v: &str, min: (u16, u16), max: (u16, u16)) -> Result<(u16, u16), String> {
    let parsed = parse_version(v);
    let fmt = |p: (u16, u16)| format!("{}.{}", p.0, p.1);
    match parsed {
        Some(p) if p < min => Err(format!(
            "client version {v} is too old. Minimum supported API version is {}, \
             please upgrade your client to a newer version",
            fmt(min)
        )),
        Some(p) if p > max => {
            Err(format!("client version {v} is too new. Maximum supported API version is {}", fmt(max)))
        }
        Some(p) => Ok(p),
        None => Err(format!("invalid API version {v:?}")),
    }
}

/// Parse `filters`: `{"k":["v",...]}` or the legacy `{"k":{"v":true}}`.
pub(crate) fn parse_filters(s: Option<&str>) -> Result<Filters, String> {
    let mut out = Filters::new();
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(out);
    };
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or_else(|| "filters must be a JSON object".to_owned())?;
    for (k, vals) in obj {
        let list = match vals {
            serde_json::Value::Array(a) => {
                a.iter().map(|x| x.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()
            }
            serde_json::Value::Object(m) => {
                Some(m.iter().filter(|(_, on)| on.as_bool() == Some(true)).map(|(v, _)| v.clone()).collect())
            }
            _ => None,
        }
        .ok_or_else(|| format!("invalid filter value for {k:?}"))?;
        out.insert(k.clone(), list);
    }
    Ok(out)
}

/// `label` filters, ANDed: `k` (present) or `k=v` (equal).
fn labels_match(labels: &BTreeMap<String, String>, wanted: &[String]) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(w.as_str()),
    })
}

pub(crate) fn check_filter_keys(f: &Filters, allowed: &[&str]) -> Result<(), String> {
    match f.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("invalid filter '{k}'")),
        None => Ok(()),
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Exited(_) => "exited",
    }
}

/// `GET /containers/json`, newest first.
pub(crate) fn list(st: &State, all: bool, f: &Filters) -> String {
    let now = st.now_ns();
    let mut s = String::from("[");
    let mut first = true;
    for c in st.containers.iter().rev().filter(|c| !c.removed) {
        if !all && !c.running() {
            continue;
        }
        if let Some(l) = f.get("label") {
            if !labels_match(&c.labels, l) {
                continue;
            }
        }
        if let Some(v) = f.get("status") {
            if !v.iter().any(|x| x == status_name(c.status)) {
                continue;
            }
        }
        if let Some(v) = f.get("name") {
            if !v.iter().any(|x| c.name.contains(x.trim_start_matches('/'))) {
                continue;
            }
        }
        if let Some(v) = f.get("id") {
            if !v.iter().any(|x| c.id.starts_with(x.as_str())) {
                continue;
            }
        }
        if !first {
            s.push(',');
        }
        first = false;
        let _ = write!(
            s,
            "{{\"Id\":\"{}\",\"Names\":[{}],\"Image\":{},\"ImageID\":\"sha256:{}\",\
             \"Command\":\"sh -c 'exec app'\",\"Created\":{},\"Ports\":[],\"Labels\":{},\
             \"State\":\"{}\",\"Status\":{},\"HostConfig\":{{\"NetworkMode\":\"none\"}},\
             \"NetworkSettings\":{{\"Networks\":{{}}}},\"Mounts\":[]}}",
            c.id,
            json_str(&format!("/{}", c.name)),
            json_str(&c.image),
            image_id(&c.image),
            c.created_ns.div_euclid(1_000_000_000),
            labels_json(&c.labels),
            status_name(c.status),
            json_str(&human_status(c, now)),
        );
    }
    s.push_str("]\n");
    s
}

/// `GET /containers/{id}/json`.
pub(crate) fn inspect(c: &Container) -> String {
    let (running, paused, exit_code) = match c.status {
        Status::Running => (true, false, 0),
        Status::Paused => (true, true, 0),
        Status::Exited(code) => (false, false, code),
        Status::Created => (false, false, 0),
    };
    let pid = if running { 1000 + c.key } else { 0 };
    let started = c.started_ns.map_or(time::GO_ZERO_TIME.to_owned(), time::rfc3339_nano);
    let finished = c.finished_ns.map_or(time::GO_ZERO_TIME.to_owned(), time::rfc3339_nano);
    let dir = format!("/var/lib/docker/containers/{}", c.id);
    let log_path =
        if c.log_driver == "json-file" { format!("{dir}/{}-json.log", c.id) } else { String::new() };
    let mut s = String::with_capacity(3072);
    let _ = writeln!(
        s,
        "{{\"Id\":\"{id}\",\"Created\":\"{created}\",\"Path\":\"sh\",\"Args\":[\"-c\",\"exec app\"],\
         \"State\":{{\"Status\":\"{status}\",\"Running\":{running},\"Paused\":{paused},\
         \"Restarting\":false,\"OOMKilled\":false,\"Dead\":false,\"Pid\":{pid},\"ExitCode\":{exit_code},\
         \"Error\":\"\",\"StartedAt\":\"{started}\",\"FinishedAt\":\"{finished}\"}},\
         \"Image\":\"sha256:{image_id}\",\"ResolvConfPath\":\"{dir}/resolv.conf\",\
         \"HostnamePath\":\"{dir}/hostname\",\"HostsPath\":\"{dir}/hosts\",\"LogPath\":{log_path},\
         \"Name\":{name},\"RestartCount\":0,\"Driver\":\"overlay2\",\"Platform\":\"linux\",\
         \"MountLabel\":\"\",\"ProcessLabel\":\"\",\"AppArmorProfile\":\"\",\"ExecIDs\":null,\
         \"HostConfig\":{{\"Binds\":null,\"ContainerIDFile\":\"\",\"LogConfig\":{{\"Type\":{driver},\"Config\":{{}}}},\
         \"NetworkMode\":\"none\",\"PortBindings\":{{}},\"RestartPolicy\":{{\"Name\":\"no\",\"MaximumRetryCount\":0}},\
         \"AutoRemove\":false,\"VolumeDriver\":\"\",\"VolumesFrom\":null,\"CapAdd\":null,\"CapDrop\":null,\
         \"CgroupnsMode\":\"private\",\"Dns\":[],\"DnsOptions\":[],\"DnsSearch\":[],\"ExtraHosts\":null,\
         \"GroupAdd\":null,\"IpcMode\":\"private\",\"Cgroup\":\"\",\"Links\":null,\"OomScoreAdj\":0,\
         \"PidMode\":\"\",\"Privileged\":false,\"PublishAllPorts\":false,\"ReadonlyRootfs\":false,\
         \"SecurityOpt\":null,\"UTSMode\":\"\",\"UsernsMode\":\"\",\"ShmSize\":67108864,\"Runtime\":\"runc\",\
         \"ConsoleSize\":[0,0],\"Isolation\":\"\",\"CpuShares\":0,\"Memory\":0,\"NanoCpus\":0,\
         \"CgroupParent\":\"\",\"BlkioWeight\":0,\"MaskedPaths\":[\"/proc/asound\",\"/proc/acpi\",\
         \"/proc/kcore\",\"/proc/keys\",\"/proc/latency_stats\",\"/proc/timer_list\",\"/proc/timer_stats\",\
         \"/proc/sched_debug\",\"/proc/scsi\",\"/sys/firmware\"],\"ReadonlyPaths\":[\"/proc/bus\",\
         \"/proc/fs\",\"/proc/irq\",\"/proc/sys\",\"/proc/sysrq-trigger\"]}},\
         \"GraphDriver\":{{\"Data\":null,\"Name\":\"overlay2\"}},\"Mounts\":[],\
         \"Config\":{{\"Hostname\":\"{hostname}\",\"Domainname\":\"\",\"User\":\"\",\"AttachStdin\":false,\
         \"AttachStdout\":true,\"AttachStderr\":true,\"Tty\":{tty},\"OpenStdin\":false,\"StdinOnce\":false,\
         \"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\
         \"Cmd\":[\"sh\",\"-c\",\"exec app\"],\"Image\":{image},\"Volumes\":null,\"WorkingDir\":\"\",\
         \"Entrypoint\":null,\"OnBuild\":null,\"Labels\":{labels}}},\
         \"NetworkSettings\":{{\"Bridge\":\"\",\"SandboxID\":\"\",\"HairpinMode\":false,\
         \"LinkLocalIPv6Address\":\"\",\"LinkLocalIPv6PrefixLen\":0,\"Ports\":{{}},\"SandboxKey\":\"\",\
         \"SecondaryIPAddresses\":null,\"SecondaryIPv6Addresses\":null,\"EndpointID\":\"\",\"Gateway\":\"\",\
         \"GlobalIPv6Address\":\"\",\"GlobalIPv6PrefixLen\":0,\"IPAddress\":\"\",\"IPPrefixLen\":0,\
         \"IPv6Gateway\":\"\",\"MacAddress\":\"\",\"Networks\":{{}}}}}}",
        id = c.id,
        created = time::rfc3339_nano(c.created_ns),
        status = status_name(c.status),
        image_id = image_id(&c.image),
        log_path = json_str(&log_path),
        name = json_str(&format!("/{}", c.name)),
        driver = json_str(&c.log_driver),
        hostname = &c.id[..12],
        tty = c.tty,
        image = json_str(&c.image),
        labels = labels_json(&c.labels),
    );
    s
}

/// `GET /version`.
pub(crate) fn version(st: &State) -> String {
    let v = json_str(&st.cfg.server_version);
    let api = &st.api_max;
    let min = format!("{}.{}", st.cfg.api_min.0, st.cfg.api_min.1);
    format!(
        "{{\"Platform\":{{\"Name\":\"\"}},\"Components\":[{{\"Name\":\"Engine\",\"Version\":{v},\
         \"Details\":{{\"ApiVersion\":\"{api}\",\"Arch\":\"amd64\",\"BuildTime\":\"2023-05-07T21:09:36.000000000+00:00\",\
         \"Experimental\":\"false\",\"GitCommit\":\"5d6db84\",\"GoVersion\":\"go1.19.8\",\
         \"KernelVersion\":\"6.1.0\",\"MinAPIVersion\":\"{min}\",\"Os\":\"linux\"}}}}],\
         \"Version\":{v},\"ApiVersion\":\"{api}\",\"MinAPIVersion\":\"{min}\",\"GitCommit\":\"5d6db84\",\
         \"GoVersion\":\"go1.19.8\",\"Os\":\"linux\",\"Arch\":\"amd64\",\"KernelVersion\":\"6.1.0\",\
         \"BuildTime\":\"2023-05-07T21:09:36.000000000+00:00\"}}\n"
    )
}

/// One event as dockerd writes it (field order of `events.http`).
pub(crate) fn event_json(ev: &Event, legacy: bool) -> String {
    let mut s = String::with_capacity(384);
    s.push('{');
    if legacy {
        let _ = write!(
            s,
            "\"status\":{},\"id\":{},\"from\":{},",
            json_str(&ev.action),
            json_str(&ev.id),
            json_str(&ev.image)
        );
    }
    let _ = write!(
        s,
        "\"Type\":\"container\",\"Action\":{},\"Actor\":{{\"ID\":{},\"Attributes\":{}}},\
         \"scope\":\"local\",\"time\":{},\"timeNano\":{}}}",
        json_str(&ev.action),
        // Escaped: a hostile test id may carry quotes or CRLF.
        json_str(&ev.id),
        labels_json(&ev.attrs),
        ev.time_ns.div_euclid(1_000_000_000),
        ev.time_ns
    );
    s
}

/// dockerd's event filters: `type`, `container` (id or name, exact or
/// prefix), `event` (action, ignoring a `: detail` suffix), `label`, `image`.
pub(crate) fn event_matches(ev: &Event, f: &Filters) -> bool {
    let any = |key: &str, pred: &dyn Fn(&str) -> bool| f.get(key).map_or(true, |v| v.iter().any(|x| pred(x)));
    any("type", &|t| t == "container")
        && any("container", &|x| ev.id.starts_with(x) || ev.name.starts_with(x))
        && any("event", &|x| ev.action == x || ev.action.split(':').next().is_some_and(|a| a == x))
        && any("image", &|x| ev.image == x)
        && f.get("label").map_or(true, |l| labels_match(&ev.attrs, l))
}

fn labels_json(m: &BTreeMap<String, String>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&json_str(k));
        s.push(':');
        s.push_str(&json_str(v));
    }
    s.push('}');
    s
}

/// A stable fake image id from the image name.
fn image_id(image: &str) -> String {
    // FNV-1a, widened to 64 hex digits: only has to look like a digest.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in image.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}").repeat(4)
}

/// The list's `Status`: `Up 5 seconds`, `Exited (0) 3 minutes ago`, …
fn human_status(c: &Container, now: i64) -> String {
    match c.status {
        Status::Created => "Created".to_owned(),
        Status::Running => format!("Up {}", human(now - c.started_ns.unwrap_or(now))),
        Status::Paused => format!("Up {} (Paused)", human(now - c.started_ns.unwrap_or(now))),
        Status::Exited(code) => format!("Exited ({code}) {} ago", human(now - c.finished_ns.unwrap_or(now))),
    }
}

/// docker/go-units `HumanDuration`.
fn human(ns: i64) -> String {
    let secs = ns / 1_000_000_000;
    let mins = secs / 60;
    let hours = mins / 60;
    match () {
        _ if secs < 1 => "Less than a second".to_owned(),
        _ if secs == 1 => "1 second".to_owned(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if mins == 1 => "About a minute".to_owned(),
        _ if mins < 60 => format!("{mins} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v1.41/_ping"), (Some("1.41"), Route::Ping));
        assert_eq!(route("/_ping"), (None, Route::Ping));
        assert_eq!(route("/v1.41/containers/abc/logs"), (Some("1.41"), Route::Logs("abc".into())));
        assert_eq!(route("/containers/abc/json"), (None, Route::Inspect("abc".into())));
        assert_eq!(route("/containers/json"), (None, Route::List));
        assert_eq!(route("/containers/a/b/logs").1, Route::NotFound);
        assert_eq!(route("/vx/_ping"), (None, Route::NotFound));
        assert_eq!(route("/v1.41"), (None, Route::NotFound));
    }

    #[test]
    fn versions() {
        assert_eq!(check_version("1.41", (1, 12), (1, 41)), Ok((1, 41)));
        assert_eq!(
            check_version("1.99", (1, 12), (1, 41)).unwrap_err(),
            "client version 1.99 is too new. Maximum supported API version is 1.41"
        );
        assert!(check_version("1.11", (1, 12), (1, 41))
            .unwrap_err()
            .starts_with("client version 1.11 is too old. Minimum supported API version is 1.12"));
    }

    #[test]
    fn filters() {
        let f = parse_filters(Some(r#"{"label":["a","b=c"]}"#)).unwrap();
        assert_eq!(f["label"], vec!["a".to_owned(), "b=c".to_owned()]);
        let f = parse_filters(Some(r#"{"label":{"a":true,"z":false}}"#)).unwrap();
        assert_eq!(f["label"], vec!["a".to_owned()]);
        assert!(parse_filters(Some("{")).is_err());
        let mut labels = BTreeMap::new();
        labels.insert("a".to_owned(), "1".to_owned());
        labels.insert("b".to_owned(), "c".to_owned());
        assert!(labels_match(&labels, &["a".into(), "b=c".into()]));
        assert!(!labels_match(&labels, &["a".into(), "b=d".into()]));
        assert!(!labels_match(&labels, &["x".into()]));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(0), "Less than a second");
        assert_eq!(human(1_000_000_000), "1 second");
        assert_eq!(human(59_000_000_000), "59 seconds");
        assert_eq!(human(60_000_000_000), "About a minute");
        assert_eq!(human(7_200_000_000_000), "2 hours");
    }
}
