//! HTTP/1.1, as much of it as a client of dockerd needs.

pub mod body;
pub mod head;
