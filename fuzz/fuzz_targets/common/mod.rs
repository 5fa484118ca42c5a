//! Helpers shared by the fuzz targets: reading a small control prefix from
//! the input and cutting the rest into pieces.
#![allow(dead_code)]

/// Reads control bytes from the front of the fuzz input; past the end it
/// yields zeros, so every input is usable.
pub struct Ctrl<'a> {
    data: &'a [u8],
}

impl<'a> Ctrl<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// What is left after the control bytes taken so far.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// 1 to 3 split points in `0..=len`, sorted (equal points give empty pieces,
/// which a push parser must also accept), from `n_byte` and the `raw` u16s.
pub fn split_points(n_byte: u8, raw: &[u16; 3], len: usize) -> Vec<usize> {
    let n = 1 + usize::from(n_byte % 3);
    let mut pts: Vec<usize> = raw[..n].iter().map(|&r| point(r, len)).collect();
    pts.sort_unstable();
    pts
}

/// A point in `0..=len` from a u16: itself modulo `len + 1` when `len`
/// fits in a u16, else scaled, so inputs over 64 KiB can be cut anywhere
/// (to within `len / 65536` bytes).
pub fn point(r: u16, len: usize) -> usize {
    if len <= usize::from(u16::MAX) {
        usize::from(r) % (len + 1)
    } else {
        (u64::from(r) * (len as u64 + 1) >> 16) as usize
    }
}

/// `data` cut at the sorted `points`.
pub fn cut<'a>(data: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(points.len() + 1);
    let mut at = 0;
    for &p in points {
        out.push(&data[at..p]);
        at = p;
    }
    out.push(&data[at..]);
    out
}

/// `data` one byte at a time.
pub fn bytewise(data: &[u8]) -> Vec<&[u8]> {
    data.chunks(1).collect()
}

/// Printable form of a byte string for assertion messages.
pub fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Chunk-encode `body` in chunks of `size` bytes, then the last chunk.
pub fn chunk(body: &[u8], size: usize, out: &mut Vec<u8>) {
    for c in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
}
