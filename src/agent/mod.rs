//! The agent: one thread, one `mio::Poll`, every connection in one slab.
//!
//! - [`event_loop`]: the loop, connections, deadlines, output flushing
//! - [`discovery`]: ping, events, list, inspect
//! - [`follow`]: one container's log stream, rotation, recovery
//! - [`budget`]: the open-files limit and the stream budget
//! - [`resume`]: where a stream resumes and how replays are dropped
//! - [`clock`]: Docker's clock, and resume points checked against it
//! - [`persist`]: checkpoints from the loop
//! - [`metrics_http`]: `/metrics` and `/healthz`
//! - [`startup`]: the checks before the loop starts (reach Docker, clear errors)

pub mod budget;
pub mod clock;
pub mod conn;
pub mod container;
pub mod discovery;
pub mod event_loop;
pub mod exchange;
pub mod follow;
pub mod metrics_http;
pub mod persist;
pub mod resume;
pub mod signals;
pub mod sock;
pub mod startup;
pub mod stream;
