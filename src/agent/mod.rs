//! The agent: one thread, one `mio::Poll`, every connection in one slab.
//!
//! # How it is cut
//!
//! [`event_loop::Agent`] is the driver: the poll, the slab of connections
//! ([`conn`]: socket, role, deadlines by kind), the timer wheel, and one
//! dispatch per token and per timer. Everything else is a part it owns, each
//! with its own state and invariants:
//!
//! | part | state | file |
//! | --- | --- | --- |
//! | Docker and discovery | up/down, API version, ping, the events stream's and the list's own backoffs | [`discovery`], `DockerState` |
//! | the containers | follow state, resume point, slot | [`container`] |
//! | the stream budget | slots in use, containers waiting (oldest first) | `budget::Slots` |
//! | the checkpointer | the locked state directory, what was loaded, dirty/armed, pacing | `persist::Checkpointer` |
//! | the scrape server | the listener, its clients by age, accept backoff | `metrics_http::ScrapeServer` |
//! | the output | its buffer and what each write error means | [`crate::output`] |
//! | the writer | flush ticks, blocked/no-space state, a deleted file, fatal failures | [`writer`] |
//! | the sink | the batch, the queue of unacknowledged batches, the connection, retries, addresses | [`sink`], [`sink_conn`], [`resolve`] |
//!
//! The rules that decide every line and every reopen do no I/O and are
//! tested on their own: [`stream`] (how a stream is opened, what each line
//! is, what a closed stream leaves for the next, what follows its end) and
//! [`resume`] (where a stream resumes; recognising replays). [`follow`] is
//! the thin driver that feeds them a stream's bytes and acts on what they
//! say (rotation included: age and idle deadlines close a stream and
//! reopen it from `stream::OpenPlan`).
//!
//! - [`event_loop`]: the driver: poll, slab, wheel, dispatch
//! - [`writer`]: the output on the loop: flushing, backpressure, failures
//! - [`conn`]: one connection: role, deadlines by kind, typed failures
//! - [`discovery`]: ping, events, list, inspect
//! - [`follow`]: one container's log stream on the loop: open, deliver, rotate, recover
//! - [`invariants`]: what must hold after every turn (checked in tests and with `--check-invariants`)
//! - [`stream`]: the stream's rules, without I/O
//! - [`resume`]: where a stream resumes and how replays are dropped
//! - [`clock`]: Docker's clock, and resume points checked against it
//! - [`budget`]: the open-files limit, the stream budget and its slots
//! - [`persist`]: the checkpointer
//! - [`metrics_http`]: `/metrics` and `/healthz`
//! - [`exchange`]: one short API call's response, head to body
//! - [`sink`]: lines into batches, batches into the queue, acknowledgements into checkpoints
//! - [`sink_conn`]: the sink's connection: push, answer, retry
//! - [`resolve`]: the sink's host name, resolved on the loop
//! - [`sock`], [`signals`]: the unix/TCP socket and the signalfd
//! - [`startup`]: the checks before the loop starts (reach Docker, clear errors)

pub mod budget;
pub mod clock;
pub mod conn;
pub mod container;
pub mod discovery;
pub mod event_loop;
pub mod exchange;
pub mod follow;
pub mod invariants;
pub mod metrics_http;
pub mod persist;
pub mod resolve;
pub mod resume;
pub mod signals;
pub mod sink;
pub mod sink_conn;
pub mod sock;
pub mod startup;
pub mod stream;
pub mod writer;
