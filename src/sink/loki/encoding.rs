//! The two push encodings (`--loki-encoding protobuf|json`) and their
//! compression: protobuf in one Snappy raw block (Loki's native format, the
//! default), or JSON in gzip.
//!
//! gzip runs at its fastest level (1): a batch is compressed within one
//! turn of the loop. Measured with `benches/loki_encode.rs` (100-byte lines
//! with the default metadata), level 1 encodes about 1 M lines per CPU
//! second, a 1 MiB batch in about 4 ms; the default level 6 made bodies 27 %
//! smaller but ran at 0.2 M lines per CPU second, 20 ms per batch.

use std::fmt;
use std::io::Write as _;
use std::str::FromStr;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::json;
use super::protobuf;
use super::push::PushRequest;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Protobuf `PushRequest` compressed as one Snappy raw block.
    #[default]
    Protobuf,
    /// JSON, gzip-compressed.
    Json,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Protobuf => "protobuf",
            Self::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    /// The `Content-Encoding` header, if any. Loki expects Snappy on
    /// protobuf without being told.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Self::Protobuf => None,
            Self::Json => Some("gzip"),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An encoding name other than `protobuf` or `json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEncoding(pub String);

impl fmt::Display for UnknownEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown Loki encoding `{}`: use `protobuf` (Snappy-compressed protobuf, Loki's native \
             format, the default) or `json` (gzip-compressed JSON)",
            self.0
        )
    }
}

impl std::error::Error for UnknownEncoding {}

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "protobuf" => Ok(Self::Protobuf),
            "json" => Ok(Self::Json),
            _ => Err(UnknownEncoding(s.to_owned())),
        }
    }
}

/// A request body ready to send, with the headers it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// Exactly sized: a body may wait in the queue through a long outage.
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    /// Size before compression.
    pub uncompressed_len: usize,
}

/// Encodes and compresses push requests, reusing its buffers and its
/// Snappy state from one batch to the next.
pub struct Encoder {
    encoding: Encoding,
    snappy: snap::raw::Encoder,
    plain: Vec<u8>,
    compressed: Vec<u8>,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder").field("encoding", &self.encoding).finish_non_exhaustive()
    }
}

impl Encoder {
    pub fn new(encoding: Encoding) -> Self {
        Self { encoding, snappy: snap::raw::Encoder::new(), plain: Vec::new(), compressed: Vec::new() }
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    pub fn encode(&mut self, req: &PushRequest) -> Body {
        self.plain.clear();
        let len = match self.encoding {
            Encoding::Protobuf => {
                protobuf::encode(req, &mut self.plain);
                // Grown, never cleared: zeroing a megabyte for every batch
                // would cost a few percent of the whole encoding.
                let need = snap::raw::max_compress_len(self.plain.len());
                if self.compressed.len() < need {
                    self.compressed.resize(need, 0);
                }
                self.snappy
                    .compress(&self.plain, &mut self.compressed)
                    .expect("a batch is far below Snappy's 4 GiB block limit, and the output is sized for it")
            }
            Encoding::Json => {
                json::encode(req, &mut self.plain);
                self.compressed.clear();
                let mut gz = GzEncoder::new(&mut self.compressed, Compression::fast());
                gz.write_all(&self.plain).expect("writing to a Vec cannot fail");
                gz.finish().expect("writing to a Vec cannot fail");
                self.compressed.len()
            }
        };
        Body {
            bytes: self.compressed[..len].to_vec(),
            content_type: self.encoding.content_type(),
            content_encoding: self.encoding.content_encoding(),
            uncompressed_len: self.plain.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::rc::Rc;

    use super::*;
    use crate::sink::loki::labels::LokiStream;

    fn request() -> PushRequest {
        let s = Rc::new(LokiStream::new(
            vec![("container".into(), "web".into())],
            vec![("container_id".into(), "abc".into())],
        ));
        let mut req = PushRequest::new();
        for i in 0..2000 {
            req.push(&s, 1_795_808_902_000_000_000 + i, &format!("GET /api/v1/items?id={i} 200"), false);
        }
        req
    }

    #[test]
    fn names_and_headers() {
        assert_eq!("protobuf".parse::<Encoding>().unwrap(), Encoding::Protobuf);
        assert_eq!("json".parse::<Encoding>().unwrap(), Encoding::Json);
        assert_eq!(Encoding::default(), Encoding::Protobuf);
        let err = "JSON".parse::<Encoding>().unwrap_err();
        assert!(err.to_string().contains("use `protobuf`"), "{err}");
        assert_eq!(Encoding::Protobuf.content_type(), "application/x-protobuf");
        assert_eq!(Encoding::Protobuf.content_encoding(), None);
        assert_eq!(Encoding::Json.content_type(), "application/json");
        assert_eq!(Encoding::Json.content_encoding(), Some("gzip"));
    }

    #[test]
    fn snappy_raw_block_round_trip() {
        let req = request();
        let body = Encoder::new(Encoding::Protobuf).encode(&req);
        assert_eq!(body.content_type, "application/x-protobuf");
        // A raw block, not the framed format (which starts with a
        // stream identifier chunk `ff 06 00 00 sNaPpY`).
        assert_ne!(body.bytes.first(), Some(&0xff));
        let plain = snap::raw::Decoder::new().decompress_vec(&body.bytes).unwrap();
        assert_eq!(plain.len(), body.uncompressed_len);
        let mut want = Vec::new();
        protobuf::encode(&req, &mut want);
        assert_eq!(plain, want);
        assert!(body.bytes.len() < plain.len() / 2, "{} of {}", body.bytes.len(), plain.len());
        assert_eq!(body.bytes.len(), body.bytes.capacity(), "exactly sized");
    }

    #[test]
    fn gzip_round_trip() {
        let req = request();
        let mut enc = Encoder::new(Encoding::Json);
        let body = enc.encode(&req);
        assert_eq!(body.content_encoding, Some("gzip"));
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body.bytes[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(plain.len(), body.uncompressed_len);
        let mut want = Vec::new();
        json::encode(&req, &mut want);
        assert_eq!(plain, want);
        // The encoder's buffers are reused: the same input, the same body.
        assert_eq!(enc.encode(&req), body);
    }
}
