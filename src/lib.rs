//! log-capturer: a Docker container log agent built around one `mio` poll
//! loop and hand-written, sans-IO parsers.
//!
//! The parsers are the foundation and are public so that the fuzz targets
//! and benchmarks drive exactly the code the agent runs:
//!
//! - [`http::head`]: the HTTP/1.1 response head (via `httparse`)
//! - [`http::body`]: chunked, `Content-Length` and read-until-close bodies
//! - [`docker::frame`]: Docker's 8-byte multiplexed frame header
//! - [`docker::timestamp`]: the RFC 3339 prefix of `timestamps=1`
//! - [`docker::lines`]: reassembly of dockerd's 16 KiB partial lines, capped
//! - [`docker::logstream`]: frames or raw TTY bytes, prefixes and lines together
//! - [`docker::api`]: the JSON bodies of the Docker API the agent reads
//! - [`response`]: a whole logs response, head to records
//! - [`record`]: the record type and its JSON form
//! - [`sink::loki`]: Loki label sets, push encodings and batches
//! - [`dns`]: host names resolved inside the loop (`/etc/hosts`,
//!   `/etc/resolv.conf`, DNS over UDP and TCP), no `getaddrinfo`

pub mod agent;
pub mod check_cmd;
pub mod checkpoint;
pub mod cli;
pub mod config_file;
pub mod decode_cmd;
pub mod dns;
pub mod docker;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod output;
pub mod record;
pub mod response;
pub mod sink;
pub mod timer_wheel;
