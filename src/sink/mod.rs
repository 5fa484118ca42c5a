//! Sinks: where records go when they leave the agent over the network, and
//! whose acknowledgements decide what counts as delivered.
//!
//! A sink is a peer of the poll loop, like the Docker connections: its
//! sockets live in the same slab with deadlines on the same timer wheel, and
//! it never blocks. What sets it apart from the file output is that writing
//! a record proves nothing: only the receiver's answer does. So records go
//! out in batches, each batch carries the resume positions of the lines in
//! it (its "ack tokens"), and a container's checkpoint advances over a line
//! only once the batch holding it has been acknowledged. Until then the
//! bounded queue holds the batch, and when the queue is full the loop stops
//! reading: dockerd's own log file is the buffer.
//!
//! The modules here are sans-IO building blocks: they turn records into
//! request bodies and keep the accounting, and leave sockets, retries and
//! checkpoints to the loop.
//!
//! - [`loki`]: Grafana Loki's push API (labels, encodings, batches, flags)
//! - [`metrics`]: the sink's metrics (registered only with a sink)
//! - [`outcome`]: what an answer means: acknowledged, rejected, retry, refused
//! - [`probe`]: `check`'s empty push: reachable, authorised, no log line sent
//! - [`queue`]: batches waiting for acknowledgement, bounded by bytes
//! - [`retention`]: how long dockerd keeps a container's log (outage headroom)
//! - [`response`]: the answer to one push (status, Retry-After, message)
//! - [`tls`]: the TLS client configuration built from the `--sink-*` flags
//! - [`transport`]: plain TCP or TLS bytes over a nonblocking socket
//! - [`url`]: a sink's address

pub mod loki;
pub mod metrics;
pub mod outcome;
pub mod probe;
pub mod queue;
pub mod response;
pub mod retention;
pub mod tls;
pub mod transport;
pub mod url;
