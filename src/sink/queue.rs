//! The batches a sink holds until its receiver acknowledges them: encoded,
//! in the order they must be sent, bounded by bytes.
//!
//! Only the front batch is ever on the wire (one push in flight): a batch
//! is acknowledged only after every batch before it, so acknowledgements
//! apply in order and a container's checkpoint can simply take the resume
//! point its newest acknowledged batch carries. Each batch carries its
//! `acks`, of the caller's type: what becomes delivered when it is
//! acknowledged.
//!
//! The bytes counted are the encoded bodies' and their acks' (what the
//! memory holds, [`Queued::held`]) plus
//! what the caller reports for the batch still being filled; the caller
//! stops reading when [`Queue::is_full`] and reads again when
//! [`Queue::has_room`], which leaves a gap between the two so reading does
//! not flap around one threshold.

use std::collections::VecDeque;
use std::time::Instant;

use crate::sink::loki::encoding::Body;

/// One batch waiting in the queue.
#[derive(Debug)]
pub struct Queued<A> {
    pub body: Body,
    pub lines: usize,
    /// When its first line was read: its age is the backlog's while it is
    /// the oldest.
    pub oldest: Instant,
    pub acks: Vec<A>,
    /// Its body carries structured metadata.
    pub metadata: bool,
    /// A piece of a batch cut in two for a receiver's limit (413, a
    /// repeated 429): never merged again.
    pub cut: bool,
}

#[derive(Debug)]
pub struct Queue<A> {
    batches: VecDeque<Queued<A>>,
    bytes: usize,
    filling: usize,
    cap: usize,
}

/// Heap bytes an ack holds beyond its own size (a container id).
pub const ACK_HEAP: usize = 64;

impl<A> Queued<A> {
    /// Memory it holds: the body and its acks (with a thousand containers
    /// in a batch, the acks weigh as much as a compressed body).
    pub fn held(&self) -> usize {
        self.body.bytes.len() + self.acks.len() * (std::mem::size_of::<A>() + ACK_HEAP)
    }
}

impl<A> Queue<A> {
    pub fn new(cap: usize) -> Self {
        Self { batches: VecDeque::new(), bytes: 0, filling: 0, cap }
    }

    pub fn push_back(&mut self, q: Queued<A>) {
        self.bytes += q.held();
        self.batches.push_back(q);
    }

    /// Put a batch back at the front (the halves of a batch that was too
    /// large go back in order: push the second, then the first).
    pub fn push_front(&mut self, q: Queued<A>) {
        self.bytes += q.held();
        self.batches.push_front(q);
    }

    /// Front to back.
    pub fn batches(&self) -> impl DoubleEndedIterator<Item = &Queued<A>> {
        self.batches.iter()
    }

    /// Front to back.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Queued<A>> {
        self.batches.iter_mut()
    }

    pub fn front(&self) -> Option<&Queued<A>> {
        self.batches.front()
    }

    /// Take the front batch off (acknowledged, rejected, or to be split).
    /// Replace the front batch's body (the same entries, encoded anew).
    pub fn set_front_body(&mut self, body: Body, metadata: bool) {
        if let Some(front) = self.batches.front_mut() {
            self.bytes -= front.held();
            front.body = body;
            front.metadata = metadata;
            self.bytes += front.held();
        }
    }

    /// Merge the batches behind the front into it while their bodies
    /// together stay within `max` bytes before compression: a backlog of
    /// small batches goes in few pushes. Only when none of them is on the
    /// wire (an answer to the smaller push must not acknowledge the
    /// merged one). The merged batch keeps every ack, in order. Returns
    /// how many batches were merged into the front.
    pub fn coalesce_front(
        &mut self,
        max: usize,
        merge: impl FnOnce(&[&Body]) -> Result<Body, String>,
    ) -> Result<usize, String> {
        // How many batches from the front fit together: one merge of all of
        // them (merging pairwise would decompress the growing front again
        // for every batch added).
        let mut n = 0;
        let mut size = 0;
        for q in &self.batches {
            if q.cut || size + q.body.uncompressed_len > max {
                break;
            }
            size += q.body.uncompressed_len;
            n += 1;
        }
        if n < 2 {
            return Ok(0);
        }
        let body = merge(&self.batches.iter().take(n).map(|q| &q.body).collect::<Vec<_>>())?;
        let mut parts = (0..n).map(|_| self.pop_front().expect("counted"));
        let mut merged = parts.next().expect("n >= 2");
        for q in parts {
            merged.lines += q.lines;
            merged.oldest = merged.oldest.min(q.oldest);
            merged.acks.extend(q.acks);
            merged.metadata |= q.metadata;
        }
        merged.body = body;
        self.push_front(merged);
        Ok(n - 1)
    }

    pub fn pop_front(&mut self) -> Option<Queued<A>> {
        let q = self.batches.pop_front()?;
        self.bytes -= q.held();
        Some(q)
    }

    /// The size of the batch being filled (not in the queue yet).
    pub fn set_filling(&mut self, bytes: usize) {
        self.filling = bytes;
    }

    /// Bytes held: queued bodies and the batch being filled.
    pub fn bytes(&self) -> usize {
        self.bytes + self.filling
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Stop reading log streams.
    pub fn is_full(&self) -> bool {
        self.bytes() >= self.cap
    }

    /// Read log streams again (below three quarters of the cap).
    pub fn has_room(&self) -> bool {
        self.bytes() < self.cap - self.cap / 4
    }

    /// When the oldest line still unacknowledged was read, among the queued
    /// batches (the caller knows the batch being filled).
    pub fn oldest(&self) -> Option<Instant> {
        self.batches.front().map(|q| q.oldest)
    }

    /// Lines in the queue.
    pub fn lines(&self) -> usize {
        self.batches.iter().map(|q| q.lines).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_behind_the_front_merge_into_it_up_to_the_limit() {
        let mut q = Queue::new(1 << 20);
        for i in 0..5u32 {
            let mut b = batch(1000, vec![i]);
            b.body.uncompressed_len = 300;
            q.push_back(b);
        }
        let held = q.bytes();
        let joined = |parts: &[&Body]| {
            let bytes = parts.iter().flat_map(|b| b.bytes.iter().copied()).collect();
            let uncompressed_len = parts.iter().map(|b| b.uncompressed_len).sum();
            Ok(Body { bytes, uncompressed_len, ..parts[0].clone() })
        };
        // 300 + 300 + 300 fits 1000, a fourth would not.
        assert_eq!(q.coalesce_front(1000, joined), Ok(2));
        assert_eq!(q.len(), 3);
        let front = q.front().unwrap();
        assert_eq!(front.acks, vec![0, 1, 2]);
        assert_eq!(front.lines, 3);
        assert_eq!(q.bytes(), held, "the same bytes held");
        assert_eq!(q.coalesce_front(100, joined), Ok(0));
    }

    /// A batch holding `n` bytes in all, its acks included.
    fn batch(n: usize, acks: Vec<u32>) -> Queued<u32> {
        let body = n - acks.len() * (std::mem::size_of::<u32>() + ACK_HEAP);
        Queued {
            body: Body {
                bytes: vec![0; body],
                content_type: "application/x-protobuf",
                content_encoding: None,
                uncompressed_len: body,
            },
            lines: acks.len(),
            oldest: Instant::now(),
            acks,
            metadata: true,
            cut: false,
        }
    }

    #[test]
    fn accounting_and_watermarks() {
        let mut q = Queue::new(1000);
        assert!(q.has_room() && !q.is_full());
        q.push_back(batch(400, vec![1, 2]));
        q.set_filling(400);
        assert_eq!(q.bytes(), 800);
        assert!(!q.has_room() && !q.is_full(), "between the marks: neither");
        q.push_back(batch(300, vec![3]));
        q.set_filling(299);
        assert!(!q.is_full(), "999 of 1000");
        q.set_filling(300);
        assert!(q.is_full());
        assert_eq!(q.lines(), 3);
        let first = q.pop_front().unwrap();
        assert_eq!(first.acks, vec![1, 2]);
        q.set_filling(0);
        assert_eq!(q.bytes(), 300);
        assert!(q.has_room());
        q.push_front(first);
        assert_eq!(q.front().unwrap().acks, vec![1, 2]);
        assert_eq!(q.bytes(), 700);
        assert_eq!(q.len(), 2);
    }
}
