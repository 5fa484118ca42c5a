//! The byte pipe under a sink's HTTP/1.1 exchange: plain TCP, or TLS
//! through a `rustls` client connection, driven by the poll loop.
//!
//! Nothing here owns a socket or blocks: each call is handed the
//! nonblocking socket, does what it can and says how far it got, as in
//! rustls' `tlsclient-mio` example. The caller keeps the interest right:
//! after any call, [`Transport::wants_write`] says whether the socket must
//! be watched for writability (handshake records, encrypted data, an alert)
//! and [`Transport::flush`] pushes those out.
//!
//! rustls buffers on both sides; the buffer of records waiting for the
//! socket is capped (`SEND_BUFFER`), so a large push body is taken in
//! pieces as the socket drains rather than encrypted whole into memory.

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection};

/// Most bytes rustls holds for the socket (plaintext before the handshake
/// ends, records after it); [`Transport::write`] takes nothing more until
/// [`Transport::flush`] has made room.
pub const SEND_BUFFER: usize = 64 << 10;

pub enum Transport {
    Plain,
    Tls(Box<ClientConnection>),
}

/// What a [`Transport::read`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// This many plaintext bytes were put at the start of the buffer.
    Data(usize),
    /// Nothing more until the socket is readable again (the TLS layer may
    /// have records to send meanwhile: see [`Transport::wants_write`]).
    WouldBlock,
    /// The server closed the connection (with or without TLS close_notify:
    /// HTTP framing, not TLS, says whether the answer was complete).
    Eof,
}

#[derive(Debug)]
pub enum TransportError {
    Io(io::Error),
    Tls(rustls::Error),
}

impl Transport {
    /// A TLS client connection to `name`; the handshake starts with the
    /// first [`Transport::flush`] (or [`Transport::write`]).
    pub fn tls(cfg: Arc<ClientConfig>, name: ServerName<'static>) -> Result<Self, TransportError> {
        let mut conn = ClientConnection::new(cfg, name).map_err(TransportError::Tls)?;
        conn.set_buffer_limit(Some(SEND_BUFFER));
        Ok(Self::Tls(Box::new(conn)))
    }

    /// Queue/write plaintext; returns how much of `data` was taken (0 when
    /// the socket or the TLS buffer is full: wait for writability, then
    /// [`Transport::flush`] and try again).
    pub fn write(&mut self, sock: &mut impl io::Write, data: &[u8]) -> Result<usize, TransportError> {
        match self {
            Self::Plain => loop {
                match sock.write(data) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(TransportError::Io(e)),
                }
            },
            Self::Tls(conn) => {
                // Room is made first so that a full buffer with a writable
                // socket still takes data.
                flush_tls(conn, sock)?;
                let taken = io::Write::write(&mut conn.writer(), data).map_err(TransportError::Io)?;
                flush_tls(conn, sock)?;
                Ok(taken)
            }
        }
    }

    /// Push out pending TLS records (handshake, encrypted data, alerts).
    /// `Ok(true)` when nothing is left to send. After an error from
    /// [`Transport::read`], one call sends the alert telling the server why
    /// we gave up (best effort; the connection is done either way).
    pub fn flush(&mut self, sock: &mut impl io::Write) -> Result<bool, TransportError> {
        match self {
            Self::Plain => Ok(true),
            Self::Tls(conn) => flush_tls(conn, sock),
        }
    }

    /// Read plaintext into `buf` (which must not be empty). Reads the socket
    /// until plaintext, `WouldBlock` or EOF, so that an edge-triggered
    /// readiness is used up.
    pub fn read(&mut self, sock: &mut impl io::Read, buf: &mut [u8]) -> Result<Received, TransportError> {
        debug_assert!(!buf.is_empty());
        match self {
            Self::Plain => loop {
                match sock.read(buf) {
                    Ok(0) => return Ok(Received::Eof),
                    Ok(n) => return Ok(Received::Data(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::WouldBlock),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(TransportError::Io(e)),
                }
            },
            Self::Tls(conn) => loop {
                // Plaintext already decrypted goes first: rustls refuses to
                // read more records while its plaintext buffer is full.
                match io::Read::read(&mut conn.reader(), buf) {
                    Ok(0) => return Ok(Received::Eof),
                    Ok(n) => return Ok(Received::Data(n)),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Received::Eof),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(TransportError::Io(e)),
                }
                match conn.read_tls(sock) {
                    // The reader reports the EOF (cleanly or not) next turn.
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::WouldBlock),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(TransportError::Io(e)),
                }
                conn.process_new_packets().map_err(TransportError::Tls)?;
            },
        }
    }

    /// Records wait to be sent: watch the socket for writability and call
    /// [`Transport::flush`].
    pub fn wants_write(&self) -> bool {
        match self {
            Self::Plain => false,
            Self::Tls(conn) => conn.wants_write(),
        }
    }

    /// Still in the TLS handshake (false for plain TCP).
    pub fn is_handshaking(&self) -> bool {
        match self {
            Self::Plain => false,
            Self::Tls(conn) => conn.is_handshaking(),
        }
    }

    /// Queue a TLS close_notify before closing the socket (a courtesy: send
    /// it with [`Transport::flush`] if the socket takes it).
    pub fn close(&mut self) {
        if let Self::Tls(conn) = self {
            conn.send_close_notify();
        }
    }
}

fn flush_tls(conn: &mut ClientConnection, sock: &mut impl io::Write) -> Result<bool, TransportError> {
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(0) => return Err(TransportError::Io(io::ErrorKind::WriteZero.into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransportError::Io(e)),
        }
    }
    Ok(true)
}

impl TransportError {
    /// A problem of certificates, names or TLS settings on one side or the
    /// other: trying again soon gets the same answer, so the operator must
    /// change something (a flag, a certificate, the server).
    pub fn is_config_problem(&self) -> bool {
        use AlertDescription as A;
        match self {
            Self::Io(_) => false,
            Self::Tls(e) => match e {
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
                | rustls::Error::PeerIncompatible(_)
                | rustls::Error::NoApplicationProtocol
                | rustls::Error::InvalidCertRevocationList(_)
                | rustls::Error::InconsistentKeys(_) => true,
                // Not TLS at all on the other end: plain HTTP on an https URL.
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => true,
                rustls::Error::AlertReceived(alert) => matches!(
                    alert,
                    A::HandshakeFailure
                        | A::BadCertificate
                        | A::UnsupportedCertificate
                        | A::CertificateRevoked
                        | A::CertificateExpired
                        | A::CertificateUnknown
                        | A::UnknownCA
                        | A::AccessDenied
                        | A::ProtocolVersion
                        | A::InsufficientSecurity
                        | A::UnrecognisedName
                        | A::CertificateRequired
                        | A::NoApplicationProtocol
                ),
                _ => false,
            },
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use AlertDescription as A;
        let e = match self {
            Self::Io(e) => return write!(f, "connection to the sink failed: {e}"),
            Self::Tls(e) => e,
        };
        match e {
            rustls::Error::InvalidCertificate(c) => {
                let (problem, fix) = match c {
                    CertificateError::UnknownIssuer => (
                        "it is not signed by a CA we trust",
                        "pass the CA that signed it with --sink-ca-file",
                    ),
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
                        "it is not made out to the name we asked for",
                        "use a URL with a name it holds, or set --sink-server-name",
                    ),
                    CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. } => {
                        ("it is outside its validity period", "renew it, or check this machine's clock")
                    }
                    CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                        ("it is not made for a TLS server", "check its extended key usage")
                    }
                    _ => ("it did not verify", "check the server's certificate chain and --sink-ca-file"),
                };
                write!(f, "the sink's TLS certificate was refused: {problem} ({c}); {fix}")
            }
            rustls::Error::AlertReceived(A::CertificateRequired) => write!(
                f,
                "the sink requires a client certificate (TLS alert {:?}): pass --sink-client-cert and \
                 --sink-client-key",
                A::CertificateRequired
            ),
            rustls::Error::AlertReceived(
                a @ (A::BadCertificate
                | A::UnknownCA
                | A::CertificateUnknown
                | A::UnsupportedCertificate
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::AccessDenied),
            ) => write!(
                f,
                "the sink refused our client certificate (TLS alert {a:?}): check --sink-client-cert \
                 against the CAs the server trusts"
            ),
            rustls::Error::AlertReceived(a @ A::HandshakeFailure) => write!(
                f,
                "the sink refused the TLS handshake (alert {a:?}): it may need a client certificate \
                 (--sink-client-cert) or a protocol version or cipher we do not offer"
            ),
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                write!(f, "the sink did not answer in TLS ({e}): if it serves plain HTTP, use an http:// URL")
            }
            rustls::Error::PeerIncompatible(_) => {
                write!(
                    f,
                    "the sink's TLS settings are incompatible with ours ({e}): TLS 1.2 or 1.3 is needed"
                )
            }
            e => write!(f, "TLS with the sink failed: {e}"),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Tls(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that hands out `input` a few bytes at a time and then
    /// blocks (or ends), and takes at most `room` bytes.
    struct Sock {
        input: Vec<u8>,
        at: usize,
        step: usize,
        eof: bool,
        out: Vec<u8>,
        room: usize,
    }

    impl io::Read for Sock {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.input.len() {
                return if self.eof { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
            }
            let n = buf.len().min(self.step).min(self.input.len() - self.at);
            buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl io::Write for Sock {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room - self.out.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sock(input: &[u8], eof: bool, room: usize) -> Sock {
        Sock { input: input.to_vec(), at: 0, step: 3, eof, out: Vec::new(), room }
    }

    #[test]
    fn plain_passes_bytes_and_says_when_the_socket_is_full_or_done() {
        let mut t = Transport::Plain;
        let mut s = sock(b"hello", true, 4);
        assert_eq!(t.write(&mut s, b"abcdef").unwrap(), 4);
        assert_eq!(t.write(&mut s, b"ef").unwrap(), 0);
        assert!(t.flush(&mut s).unwrap() && !t.wants_write() && !t.is_handshaking());
        let mut buf = [0; 16];
        assert_eq!(t.read(&mut s, &mut buf).unwrap(), Received::Data(3));
        assert_eq!(t.read(&mut s, &mut buf).unwrap(), Received::Data(2));
        assert_eq!(t.read(&mut s, &mut buf).unwrap(), Received::Eof);
        let mut s = sock(b"", false, 4);
        assert_eq!(t.read(&mut s, &mut buf).unwrap(), Received::WouldBlock);
    }

    /// A client that trusts nothing: enough to handshake up to the
    /// server's certificate.
    fn tls() -> Transport {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Transport::tls(Arc::new(cfg), ServerName::try_from("localhost").unwrap()).unwrap()
    }

    #[test]
    fn tls_sends_a_client_hello_only_as_the_socket_takes_it() {
        let mut t = tls();
        assert!(t.is_handshaking() && t.wants_write());
        let mut s = sock(b"", false, 10);
        assert!(!t.flush(&mut s).unwrap(), "10 bytes do not hold a ClientHello");
        assert_eq!(s.out[0], 0x16, "a handshake record");
        s.room = 1 << 20;
        assert!(t.flush(&mut s).unwrap() && !t.wants_write());
        // Plaintext before the handshake ends is buffered, up to the cap.
        let big = vec![b'x'; 2 * SEND_BUFFER];
        let taken = t.write(&mut s, &big).unwrap();
        assert!(taken > 0 && taken <= SEND_BUFFER, "{taken}");
        assert_eq!(t.write(&mut s, &big).unwrap(), 0);
    }

    #[test]
    fn tls_garbage_and_eof() {
        let mut t = tls();
        let mut buf = [0; 64];
        let mut s = sock(b"HTTP/1.1 400 Bad Request\r\n\r\n", false, 1 << 20);
        t.flush(&mut s).unwrap();
        let e = t.read(&mut s, &mut buf).unwrap_err();
        assert!(e.is_config_problem(), "{e:?}");
        assert!(e.to_string().contains("use an http:// URL"), "{e}");
        // The alert saying why goes out on the next flush.
        let before = s.out.len();
        t.flush(&mut s).unwrap();
        assert_eq!(s.out.get(before), Some(&0x15), "an alert record");

        let mut t = tls();
        let mut s = sock(b"", true, 1 << 20);
        t.flush(&mut s).unwrap();
        assert_eq!(t.read(&mut s, &mut buf).unwrap(), Received::Eof);
    }
}
