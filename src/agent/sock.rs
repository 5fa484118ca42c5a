//! A nonblocking connection to dockerd over a unix socket or TCP.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

pub enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Where to connect, resolved once at start (name lookups block; the loop
/// must not).
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(std::path::PathBuf),
    Tcp(SocketAddr),
}

impl Sock {
    /// Start a nonblocking connect. A unix socket connects at once or fails
    /// (EAGAIN when dockerd's backlog is full counts as a failure to retry);
    /// TCP completes when the socket turns writable: see [`Sock::finish_connect`].
    pub fn connect(ep: &Endpoint) -> io::Result<Sock> {
        match ep {
            Endpoint::Unix(p) => UnixStream::connect(Path::new(p)).map(Sock::Unix),
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(*a)?;
                s.set_nodelay(true)?;
                Ok(Sock::Tcp(s))
            }
        }
    }

    /// On the first writable event: Ok(true) if connected, Ok(false) if not
    /// yet, Err if the connect failed.
    pub fn finish_connect(&self) -> io::Result<bool> {
        if let Some(e) = self.take_error()? {
            return Err(e);
        }
        let res = match self {
            Sock::Unix(s) => s.peer_addr().map(|_| ()),
            Sock::Tcp(s) => s.peer_addr().map(|_| ()),
        };
        match res {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// SO_RCVBUF, for the `--stream-rcvbuf` tuning knob.
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        use nix::sys::socket::{setsockopt, sockopt::RcvBuf};
        match self {
            Sock::Unix(s) => setsockopt(s, RcvBuf, &bytes),
            Sock::Tcp(s) => setsockopt(s, RcvBuf, &bytes),
        }
        .map_err(io::Error::from)
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Sock::Unix(s) => s.take_error(),
            Sock::Tcp(s) => s.take_error(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(buf),
            Sock::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write(buf),
            Sock::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Sock {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.register(r, t, i),
            Sock::Tcp(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.reregister(r, t, i),
            Sock::Tcp(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.deregister(r),
            Sock::Tcp(s) => s.deregister(r),
        }
    }
}
