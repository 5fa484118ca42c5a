//! Discovery (the events stream and the container list) against a daemon
//! that refuses, cuts or garbles it, and against a hostile daemon whose
//! container ids try to smuggle a second request onto the socket.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);
/// The window over which request rates are measured.
const WINDOW: Duration = Duration::from_secs(5);
/// Requests a backoff starting at 250 ms and doubling allows in [`WINDOW`]
/// (0.125+0.25+0.5+1+2 s at the shortest jitter: six), with room.
const MAX_IN_WINDOW: u64 = 8;

const PLUGIN: &str = "authorization denied by plugin authz-broker: access to /events is not allowed";

fn lines_with(agent: &Agent, needle: &str) -> usize {
    agent.stderr().lines().filter(|l| l.contains(needle)).count()
}

fn delivered(agent: &Agent, name: &str, message: &str) -> bool {
    read_output(&agent.output).iter().any(|r| r.container == name && r.message == message)
}

fn failures(agent: &Agent, call: &str, kind: &str) -> f64 {
    agent.metric(&format!(r#"log_capturer_discovery_failures_total{{call="{call}",kind="{kind}"}}"#))
}

/// The double's requests of one kind stay below [`MAX_IN_WINDOW`] for
/// [`WINDOW`] after `base`.
fn bounded(d: &Double, base: u64, what: &str, count: fn(&Stats) -> u64) {
    let busy = d.wait_until(WINDOW, |s| count(s) > base + MAX_IN_WINDOW);
    assert!(!busy, "{what}: {} requests in {WINDOW:?}: no backoff", count(&d.stats()) - base);
}

#[test]
fn events_refused_by_a_plugin_back_off_say_why_and_make_healthz_fail() {
    let dir = TempDir::new("disc-403");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("web"));
    d.inject(Match::Events, Fault::Status(403, PLUGIN.into()), u32::MAX);
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    bounded(&d, 0, "events", |s| s.events_requests_total);
    assert!(d.stats().events_requests_total >= 2, "it retries");

    // The daemon's own words, once (rate-limited), not one line per try.
    let said = lines_with(&agent, PLUGIN);
    assert!((1..=2).contains(&said), "{said} lines with the plugin's message:\n{}", agent.stderr());
    let (status, body) = agent.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(PLUGIN), "{body}");
    assert!(failures(&agent, "events", "status_4xx") >= 2.0);
    assert_eq!(agent.metric("log_capturer_containers_followed"), 0.0);

    // Fixed: the events stream opens at the next try, the list follows,
    // the container is followed and the agent is healthy again.
    d.clear_faults();
    d.write(&id, Stream::Stdout, b"after the plugin");
    assert!(wait_for(T, || delivered(&agent, "web", "after the plugin")), "{}", agent.stderr());
    assert!(wait_for(T, || agent.get("/healthz").0 == 200), "{}", agent.get("/healthz").1);
    assert_eq!(d.stats().non_get_requests, 0);
}

#[test]
fn an_events_stream_that_ends_at_once_is_retried_with_backoff() {
    let dir = TempDir::new("disc-close");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("web"));
    d.inject(Match::Events, Fault::CloseAfter(Duration::ZERO), u32::MAX);
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    bounded(&d, 0, "events", |s| s.events_requests_total);
    let s = d.stats();
    assert!(s.events_requests_total >= 2, "it retries");
    // One list per events stream at most: bounded the same way.
    assert!(s.list_requests_total <= s.events_requests_total, "{s:?}");
    assert!(failures(&agent, "events", "closed") >= 2.0);
    let said = lines_with(&agent, "events");
    assert!(said <= 3, "{said} lines about events:\n{}", agent.stderr());

    d.clear_faults();
    d.write(&id, Stream::Stdout, b"stream stays up");
    assert!(wait_for(T, || delivered(&agent, "web", "stream stays up")), "{}", agent.stderr());
    assert!(wait_for(T, || agent.get("/healthz").0 == 200), "{}", agent.get("/healthz").1);
}

#[test]
fn a_malformed_list_is_retried_with_backoff_and_makes_healthz_fail() {
    let dir = TempDir::new("disc-garbage");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("old"));
    d.inject(Match::List, Fault::Body(b"[{\"Id\": this is not json".to_vec()), u32::MAX);
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    bounded(&d, 0, "list", |s| s.list_requests_total);
    let s = d.stats();
    assert!(s.list_requests_total >= 2, "it retries");
    // The list is retried on its own: the events stream stays up.
    assert_eq!(s.events_requests_total, 1, "{s:?}");
    let (status, body) = agent.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("list"), "{body}");
    assert!(failures(&agent, "list", "protocol") >= 2.0);
    let said = lines_with(&agent, "container list");
    assert!((1..=2).contains(&said), "{said} lines about the list:\n{}", agent.stderr());

    // Meanwhile a container that starts is followed through its event.
    let new = d.create_and_start(ContainerSpec::new("new"));
    d.write(&new, Stream::Stdout, b"seen by its event");
    assert!(wait_for(T, || delivered(&agent, "new", "seen by its event")), "{}", agent.stderr());

    d.clear_faults();
    d.write(&id, Stream::Stdout, b"listed at last");
    assert!(wait_for(T, || delivered(&agent, "old", "listed at last")), "{}", agent.stderr());
    assert!(wait_for(T, || agent.get("/healthz").0 == 200), "{}", agent.get("/healthz").1);
}

#[test]
fn an_oversize_list_is_cut_at_the_cap_and_retried_with_backoff() {
    let dir = TempDir::new("disc-huge");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("web"));
    const HUGE: usize = 100 << 20;
    d.inject(Match::List, Fault::HugeBody(HUGE), u32::MAX);
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    bounded(&d, 0, "list", |s| s.list_requests_total);
    let s = d.stats();
    assert!(s.list_requests_total >= 2, "it retries");
    // Each try reads at most the cap (32 MiB) plus what the sockets hold.
    let per_try = (32u64 << 20) + (4 << 20);
    assert!(
        s.bytes_sent <= s.list_requests_total * per_try,
        "{} MB sent for {} lists",
        s.bytes_sent >> 20,
        s.list_requests_total
    );
    assert!(failures(&agent, "list", "too_large") >= 2.0);
    let (status, body) = agent.get("/healthz");
    assert_eq!(status, 503, "{body}");

    d.clear_faults();
    d.write(&id, Stream::Stdout, b"small list again");
    assert!(wait_for(T, || delivered(&agent, "web", "small list again")), "{}", agent.stderr());
    assert!(wait_for(T, || agent.get("/healthz").0 == 200), "{}", agent.get("/healthz").1);
}

/// An id that, pasted into `GET /containers/{id}/json HTTP/1.1`, ends that
/// request and starts a `POST …/kill` on the same connection (the rest of
/// the agent's request becomes a header of the smuggled one).
fn smuggling_id(victim: &str) -> String {
    format!("x HTTP/1.1\r\nHost: docker\r\n\r\nPOST /containers/{victim}/kill HTTP/1.1\r\nX-Smuggled: ")
}

#[test]
fn an_event_id_cannot_smuggle_a_request() {
    let dir = TempDir::new("disc-smuggle-ev");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    assert!(d.wait_until(T, |s| s.events_streams_open == 1 && s.list_requests_total >= 1));
    let victim = d.create_and_start(ContainerSpec::new("victim"));
    for _ in 0..3 {
        d.emit_event("start", &smuggling_id(&victim), "evil");
    }
    d.write(&victim, Stream::Stdout, b"still here");
    assert!(wait_for(T, || delivered(&agent, "victim", "still here")), "{}", agent.stderr());
    assert_eq!(d.stats().non_get_requests, 0, "a request other than GET reached the daemon");
    assert!(wait_for(T, || lines_with(&agent, "invalid container id") >= 1), "{}", agent.stderr());
    assert_eq!(lines_with(&agent, "invalid container id"), 1, "{}", agent.stderr());
}

#[test]
fn a_list_entry_id_cannot_smuggle_a_request() {
    let dir = TempDir::new("disc-smuggle-list");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let victim = d.create_and_start(ContainerSpec::new("victim"));
    let entry = |id: &str, name: &str| {
        serde_json::json!({"Id": id, "Names": [format!("/{name}")], "Image": "busybox:local",
                           "Labels": {}, "State": "running", "Created": 1})
    };
    let list = serde_json::json!([entry(&smuggling_id(&victim), "evil"), entry(&victim, "victim")]);
    d.inject(Match::List, Fault::Body(list.to_string().into_bytes()), 1);
    d.write(&victim, Stream::Stdout, b"listed");
    let agent = Agent::start(d.socket(), &dir.0, &["--from-beginning"]);
    assert!(wait_for(T, || delivered(&agent, "victim", "listed")), "{}", agent.stderr());
    assert_eq!(d.stats().non_get_requests, 0, "a request other than GET reached the daemon");
    assert!(wait_for(T, || lines_with(&agent, "invalid container id") >= 1), "{}", agent.stderr());
    assert_eq!(lines_with(&agent, "invalid container id"), 1, "{}", agent.stderr());
}

#[test]
fn a_checkpoint_with_an_invalid_id_is_ignored() {
    let dir = TempDir::new("disc-ckpt");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    let id = d.create_and_start(ContainerSpec::new("web"));
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    d.write(&id, Stream::Stdout, b"first run");
    assert!(wait_for(T, || delivered(&agent, "web", "first run")), "{}", agent.stderr());
    assert!(agent.stop("TERM").success());

    // Someone adds an entry whose key would smuggle a request.
    let path = dir.0.join("state/checkpoints.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = state["containers"][&id].clone();
    assert!(entry.is_object(), "{state}");
    state["containers"][smuggling_id(&id)] = entry;
    std::fs::write(&path, state.to_string()).unwrap();

    let agent = Agent::start(d.socket(), &dir.0, &[]);
    d.write(&id, Stream::Stdout, b"second run");
    assert!(wait_for(T, || delivered(&agent, "web", "second run")), "{}", agent.stderr());
    assert_eq!(lines_with(&agent, "ignored 1 checkpoint"), 1, "{}", agent.stderr());
    assert_eq!(d.stats().non_get_requests, 0);
}

/// A container that starts while the container list is on its way is
/// followed: the list is a snapshot from before it, the events stream
/// names it, and the list must not make the agent forget it (it did: no
/// other event comes for a running container, so it was never followed;
/// `make test` under load hit it at start-up, a container created right
/// after the agent connected). The double makes its list when the request
/// arrives and holds it 3 s, as a busy dockerd may.
#[test]
fn a_container_started_while_the_list_is_under_way_is_followed() {
    let dir = TempDir::new("disc-race");
    let d = Double::start(Config::in_temp_dir()).unwrap();
    d.inject(Match::List, Fault::Delay(Duration::from_secs(3)), 1);
    let agent = Agent::start(d.socket(), &dir.0, &[]);
    assert!(
        d.wait_until(T, |s| s.list_requests_total >= 1 && s.events_streams_open >= 1),
        "no list taken\n{}",
        agent.stderr()
    );
    let ra = d.create_and_start(ContainerSpec::new("ra"));
    let rb = d.create_and_start(ContainerSpec::new("rb"));
    // Both streams open and the list answered: only the events stream and
    // the two log streams are left connected (the list's connection stays
    // open until its answer goes, 3 s after the request).
    let settled = d.wait_until(T, |s| s.log_streams_open == 2 && s.connections_open == 3);
    assert!(settled, "streams not open or the list never answered: {:?}\n{}", d.stats(), agent.stderr());
    d.write(&ra, Stream::Stdout, b"ra after the list");
    d.write(&rb, Stream::Stdout, b"rb after the list");
    assert!(
        wait_for(T, || delivered(&agent, "ra", "ra after the list")
            && delivered(&agent, "rb", "rb after the list")),
        "lines written after the list did not arrive: {} of 2 containers followed\n{}",
        agent.metric("log_capturer_containers_followed"),
        agent.stderr()
    );
    let listed = agent.metric("log_capturer_containers_followed") == 2.0;
    assert!(listed, "{} of 2 followed\n{}", agent.metric("log_capturer_containers_followed"), agent.stderr());
}
