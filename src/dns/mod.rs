//! Host names resolved without blocking and without NSS: `getaddrinfo`
//! blocks the calling thread for as long as a DNS server stays silent, and
//! a static binary in a `FROM scratch` image has no NSS modules to load.
//! Everything here is sans-IO: bytes and time in, bytes and answers out.
//!
//! - [`hosts`]: the names of `/etc/hosts`
//! - [`resolv_conf`]: the servers and options of `/etc/resolv.conf`, with
//!   glibc's defaults and limits
//! - [`message`]: the DNS wire format, queries and responses, TCP framing
//! - [`resolver`]: one lookup's state machine: hosts, search list, servers,
//!   retries, deadlines, TCP fallback
//! - [`blocking`]: the same lookups over blocking sockets, for `check` and start-up
//! - [`cache`]: answers kept for their TTL, clamped, bounded

pub mod blocking;
pub mod cache;
pub mod hosts;
pub mod message;
pub mod resolv_conf;
pub mod resolver;
