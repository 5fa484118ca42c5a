//! Docker's log stream formats and API bodies.

pub mod api;
pub mod frame;
pub mod lines;
pub mod logstream;
pub mod request;
pub mod timestamp;
