//! `/etc/hosts` (hosts(5)): lines of `address name [alias...]`, `#` to the
//! end of the line is a comment.
//!
//! The file's bytes are kept as they are (at most [`MAX_FILE`] of them)
//! and scanned on each lookup: lookups happen once per connection attempt,
//! and some hosts files are block lists of 100 000 lines that would cost
//! far more memory parsed into entries than as text. Names match without
//! regard to ASCII case; every address of a name is returned, in file
//! order, as glibc's `getaddrinfo` does.

use std::net::IpAddr;

/// Bytes of the file kept; the rest is ignored (a line cut by the cap is
/// dropped whole).
pub const MAX_FILE: usize = 4 << 20;
/// Longer lines are skipped: no real entry comes near this.
pub const MAX_LINE: usize = 8 * 1024;
/// Addresses returned for one name.
pub const MAX_ADDRS: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    text: Vec<u8>,
    /// Whether bytes past [`MAX_FILE`] were dropped.
    cut: bool,
}

impl Hosts {
    /// The file's contents (an absent file is `Hosts::default()`).
    pub fn parse(bytes: &[u8]) -> Self {
        if bytes.len() <= MAX_FILE {
            return Self { text: bytes.to_vec(), cut: false };
        }
        let keep = memchr::memrchr(b'\n', &bytes[..MAX_FILE]).map_or(0, |i| i + 1);
        Self { text: bytes[..keep].to_vec(), cut: true }
    }

    /// Whether the file was longer than [`MAX_FILE`] and its end ignored.
    pub fn was_cut(&self) -> bool {
        self.cut
    }

    /// The addresses of `name` (one trailing dot ignored), in file order,
    /// without duplicates, at most [`MAX_ADDRS`].
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let name = name.strip_suffix('.').unwrap_or(name).as_bytes();
        let mut out = Vec::new();
        if name.is_empty() {
            return out;
        }
        for line in self.text.split(|&b| b == b'\n') {
            if line.len() > MAX_LINE {
                continue;
            }
            let line = match memchr::memchr(b'#', line) {
                Some(i) => &line[..i],
                None => line,
            };
            let mut fields = line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
            let Some(addr) = fields.next().and_then(parse_addr) else { continue };
            if fields.any(|f| f.strip_suffix(b".").unwrap_or(f).eq_ignore_ascii_case(name))
                && !out.contains(&addr)
            {
                out.push(addr);
                if out.len() == MAX_ADDRS {
                    break;
                }
            }
        }
        out
    }
}

/// An address field: IPv4 dotted quad or IPv6 (a `%zone` suffix, which
/// needs an interface lookup to mean anything, makes the line unusable).
fn parse_addr(field: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    const FILE: &str = "\
# The usual, as Docker writes it into a container.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
172.17.0.2\t4f1e2d3c5b6a
   10.0.0.5   Loki.Example.   loki   # the sink
10.0.0.6 loki.example # a second address
2001:db8::5 loki.example
10.0.0.5 loki.example
not-an-address loki.example
10.0.0.7
10.0.0.8 other#loki.example
fe80::1%eth0 loki.example
10.0.0.9 loki.example.org
";

    #[test]
    fn names_aliases_case_and_comments() {
        let h = Hosts::parse(FILE.as_bytes());
        assert_eq!(h.lookup("loki.example"), ips(&["10.0.0.5", "10.0.0.6", "2001:db8::5"]));
        assert_eq!(h.lookup("LOKI.EXAMPLE."), h.lookup("loki.example"));
        assert_eq!(h.lookup("loki"), ips(&["10.0.0.5"]));
        assert_eq!(h.lookup("localhost"), ips(&["127.0.0.1", "::1"]));
        assert_eq!(h.lookup("ip6-loopback"), ips(&["::1"]));
        assert_eq!(h.lookup("other"), ips(&["10.0.0.8"]));
        assert_eq!(h.lookup("4f1e2d3c5b6a"), ips(&["172.17.0.2"]));
        assert_eq!(h.lookup("the"), ips(&[]), "comment text is not a name");
        assert_eq!(h.lookup("example"), ips(&[]));
        assert_eq!(h.lookup(""), ips(&[]));
        assert_eq!(h.lookup("."), ips(&[]));
        assert!(!h.was_cut());
    }

    #[test]
    fn crlf_and_empty_files() {
        let h = Hosts::parse(b"10.1.1.1 a\r\n10.1.1.2 b\r\n");
        assert_eq!(h.lookup("a"), ips(&["10.1.1.1"]));
        assert_eq!(h.lookup("b"), ips(&["10.1.1.2"]));
        assert_eq!(Hosts::parse(b"").lookup("a"), ips(&[]));
        assert_eq!(Hosts::default().lookup("localhost"), ips(&[]));
        assert_eq!(Hosts::parse(b"\xff\xfe 1.2.3.4 a\n1.2.3.5 \xff a").lookup("a"), ips(&["1.2.3.5"]));
    }

    #[test]
    fn bounds() {
        let mut long = String::from("10.0.0.1 ");
        long.push_str(&"x ".repeat(MAX_LINE));
        long.push_str("far\n10.0.0.2 near\n");
        let h = Hosts::parse(long.as_bytes());
        assert_eq!(h.lookup("far"), ips(&[]), "an overlong line is skipped");
        assert_eq!(h.lookup("near"), ips(&["10.0.0.2"]));

        let many: String = (0..100).map(|i| format!("10.0.{}.{} many\n", i / 250, i % 250)).collect();
        assert_eq!(Hosts::parse(many.as_bytes()).lookup("many").len(), MAX_ADDRS);

        let mut big = "10.0.0.1 first\n".to_string();
        while big.len() + 100 < MAX_FILE {
            big.push_str("# padding padding padding padding padding padding padding\n");
        }
        // Up to 10 bytes before the cap: the next line straddles it.
        big.push_str(&format!("#{}\n", "p".repeat(MAX_FILE - 10 - big.len() - 2)));
        big.push_str("10.0.0.2 cut-in-two\n10.0.0.3 beyond\n");
        let h = Hosts::parse(big.as_bytes());
        assert!(h.was_cut());
        assert_eq!(h.lookup("first"), ips(&["10.0.0.1"]));
        assert_eq!(h.lookup("cut-in-two"), ips(&[]), "a line cut by the cap is dropped");
        assert_eq!(h.lookup("beyond"), ips(&[]));
    }
}
