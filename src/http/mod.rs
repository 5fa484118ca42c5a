//! HTTP/1.1, as much of it as a client of dockerd and of the sinks needs.

pub mod body;
pub mod head;
pub mod request;
