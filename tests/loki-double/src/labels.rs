//! Loki's stream selector string, `{name="value", ...}`: parsed the way
//! Loki's `syntax.ParseLabels` accepts it (equality matchers only, values
//! quoted as Go string literals), then checked against the label limits the
//! distributor enforces, and written back in Prometheus' canonical form
//! (names sorted, `{a="1", b="2"}`), which is how Loki names a stream.

use crate::validate::{Limits, Reason, Rejection};

/// A parsed label set, in the order written.
pub type Pairs = Vec<(String, String)>;

/// Why a selector does not parse: Loki 2.9 answers `couldn't parse labels:
/// 1:COL: parse error: WHAT` (2.8 without the prefix), reason
/// `invalid_labels`, and refuses the whole push for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based column of the offending character, as LogQL's parser says it.
    pub col: usize,
    pub what: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "1:{}: parse error: {}", self.col, self.what)
    }
}

/// Parse `{a="b", c="d"}`. Whitespace is allowed between tokens; a
/// trailing comma is not.
pub fn parse(s: &str) -> Result<Pairs, ParseError> {
    let b = s.as_bytes();
    let mut p = Cursor { b, i: 0 };
    p.ws();
    p.expect(b'{')?;
    let mut pairs = Vec::new();
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let name = p.name()?;
            p.ws();
            match (p.peek(), p.b.get(p.i + 1)) {
                (Some(b'='), Some(b'~')) => {
                    return Err(p.err("unexpected <op:=~> in label set, expected \"=\""))
                }
                (Some(b'!'), Some(b'=')) => {
                    return Err(p.err("unexpected <op:!=> in label set, expected \"=\""))
                }
                (Some(b'!'), Some(b'~')) => {
                    return Err(p.err("unexpected <op:!~> in label set, expected \"=\""))
                }
                (Some(b'='), _) => p.i += 1,
                _ => return Err(p.unexpected()),
            }
            p.ws();
            let value = p.string()?;
            pairs.push((name, value));
            p.ws();
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b'}') => {
                    p.i += 1;
                    break;
                }
                _ => return Err(p.unexpected()),
            }
        }
    }
    p.ws();
    if p.i != b.len() {
        return Err(p.err("syntax error: unexpected text after }"));
    }
    Ok(pairs)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, what: &str) -> ParseError {
        ParseError { col: self.i + 1, what: what.to_owned() }
    }

    /// LogQL's lexer's words for what it found instead of what it wanted.
    fn unexpected(&self) -> ParseError {
        match self.peek() {
            None => self.err("unexpected end of input inside braces"),
            Some(c) => self.err(&format!("unexpected character inside braces: '{}'", c as char)),
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("syntax error: expected {}", c as char)))
        }
    }

    /// A label name as Prometheus' legacy rules allow: `[a-zA-Z_][a-zA-Z0-9_]*`.
    fn name(&mut self) -> Result<String, ParseError> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.i += 1,
            _ => return Err(self.unexpected()),
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.i += 1;
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
    }

    /// A Go string literal: `"..."` with Go's escapes, or a raw `` `...` ``.
    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.i;
        let mut out = Vec::new();
        match self.peek() {
            Some(b'`') => {
                self.i += 1;
                loop {
                    match self.peek() {
                        None => return Err(self.err("literal not terminated")),
                        Some(b'`') => break,
                        Some(c) => out.push(c),
                    }
                    self.i += 1;
                }
                self.i += 1;
            }
            Some(b'"') => {
                self.i += 1;
                loop {
                    match self.peek() {
                        None | Some(b'\n') => return Err(self.err("literal not terminated")),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            self.i += 1;
                            self.escape(&mut out)?;
                            continue;
                        }
                        Some(c) => out.push(c),
                    }
                    self.i += 1;
                }
                self.i += 1;
            }
            _ => return Err(self.unexpected()),
        }
        String::from_utf8(out)
            .map_err(|_| ParseError { col: start + 1, what: "invalid UTF-8 in label value".to_owned() })
    }

    /// After a backslash; leaves `i` past the escape.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ParseError> {
        let Some(c) = self.peek() else { return Err(self.err("literal not terminated")) };
        self.i += 1;
        let simple = match c {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(v) = simple {
            out.push(v);
            return Ok(());
        }
        match c {
            b'x' => {
                let v = self.digits(2, 16)?;
                out.push(v as u8);
            }
            b'0'..=b'7' => {
                self.i -= 1;
                let v = self.digits(3, 8)?;
                if v > 255 {
                    return Err(self.err("invalid octal escape"));
                }
                out.push(v as u8);
            }
            b'u' | b'U' => {
                let v = self.digits(if c == b'u' { 4 } else { 8 }, 16)?;
                let ch = char::from_u32(v).ok_or_else(|| self.err("invalid unicode escape"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => return Err(self.err("invalid escape in label value")),
        }
        Ok(())
    }

    fn digits(&mut self, n: usize, radix: u32) -> Result<u32, ParseError> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self
                .peek()
                .and_then(|c| (c as char).to_digit(radix))
                .ok_or_else(|| self.err("invalid escape"))?;
            v = v * radix + d;
            self.i += 1;
        }
        Ok(v)
    }
}

/// Prometheus' `Labels.String()`: sorted by name, values quoted like Go's
/// `strconv.Quote`. Stable sort, so duplicate names stay in written order.
pub fn canonical(pairs: &Pairs) -> String {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s = String::from("{");
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push('=');
        quote_into(&mut s, v);
    }
    s.push('}');
    s
}

/// Go's `strconv.Quote` for the characters label values hold in practice:
/// printable text kept, quotes, backslashes and control characters escaped.
pub fn quote_into(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{7}' => s.push_str("\\a"),
            '\u{8}' => s.push_str("\\b"),
            '\u{c}' => s.push_str("\\f"),
            '\u{b}' => s.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => s.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

/// A stream's labels as the distributor accepts them: parsed, checked
/// against the limits, and named canonically. Errors carry Loki's reason
/// and message; every entry of such a stream is rejected.
pub fn validate(raw: &str, limits: &Limits) -> Result<(String, Pairs), Rejection> {
    let pairs = parse(raw).map_err(|e| Rejection {
        reason: Reason::InvalidLabels,
        message: format!("couldn't parse labels: {e}"),
    })?;
    if pairs.is_empty() {
        return Err(Rejection {
            reason: Reason::MissingLabels,
            message: "error at least one label pair is required per stream".to_owned(),
        });
    }
    let name = canonical(&pairs);
    if pairs.len() > limits.max_label_names_per_series {
        return Err(Rejection {
            reason: Reason::MaxLabelNamesPerSeries,
            message: format!(
                "entry for stream '{name}' has {} label names; limit {}",
                pairs.len(),
                limits.max_label_names_per_series
            ),
        });
    }
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut last: Option<&str> = None;
    for (k, v) in sorted {
        if k.len() > limits.max_label_name_length {
            return Err(Rejection {
                reason: Reason::LabelNameTooLong,
                message: format!("stream '{name}' has label name too long: '{k}'"),
            });
        }
        if v.len() > limits.max_label_value_length {
            return Err(Rejection {
                reason: Reason::LabelValueTooLong,
                message: format!("stream '{name}' has label value too long: '{v}'"),
            });
        }
        if last == Some(k.as_str()) {
            return Err(Rejection {
                reason: Reason::DuplicateLabelNames,
                message: format!("stream '{name}' has duplicate label name: '{k}'"),
            });
        }
        last = Some(k);
    }
    Ok((name, pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pairs {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_go_literals() {
        assert_eq!(p(r#"{a="b"}"#), vec![("a".into(), "b".into())]);
        assert_eq!(
            p(" { job = \"x\" ,_b=`raw\\n` } "),
            vec![("job".into(), "x".into()), ("_b".into(), "raw\\n".into())]
        );
        assert_eq!(p(r#"{a="q\"\\\n\x41\101\u00e9"}"#)[0].1, "q\"\\\nAAé");
        assert_eq!(p("{}"), vec![]);
    }

    #[test]
    fn rejects_bad_syntax() {
        for s in [
            "",
            "a=\"b\"",
            "{a=\"b\",}",
            "{a=\"b\"",
            "{1a=\"b\"}",
            "{a-b=\"c\"}",
            "{a=b}",
            "{a!=\"b\"}",
            "{a=~\"b\"}",
            "{a=\"b\"} x",
            "{a=\"b\\q\"}",
            "{a=\"\\xff\"}",
            "{a=\"b}",
        ] {
            assert!(parse(s).is_err(), "{s:?} parsed");
        }
        assert_eq!(parse("{a=b}").unwrap_err().col, 4);
    }

    #[test]
    fn canonical_form_is_sorted_and_quoted() {
        assert_eq!(canonical(&p(r#"{z="1", a="x\"y\n"}"#)), r#"{a="x\"y\n", z="1"}"#);
    }

    #[test]
    fn limits() {
        let l = Limits::default();
        assert_eq!(validate("{}", &l).unwrap_err().reason, Reason::MissingLabels);
        assert_eq!(validate("{a=\"1\",a=\"2\"}", &l).unwrap_err().reason, Reason::DuplicateLabelNames);
        assert_eq!(validate("{a=1}", &l).unwrap_err().reason, Reason::InvalidLabels);
        let many: Vec<String> = (0..16).map(|i| format!("l{i}=\"v\"")).collect();
        let r = validate(&format!("{{{}}}", many.join(",")), &l).unwrap_err();
        assert_eq!(r.reason, Reason::MaxLabelNamesPerSeries);
        assert!(r.message.ends_with("has 16 label names; limit 15"), "{}", r.message);
        let ok: Vec<String> = (0..15).map(|i| format!("l{i}=\"v\"")).collect();
        assert!(validate(&format!("{{{}}}", ok.join(",")), &l).is_ok());
        let long = "n".repeat(1025);
        assert_eq!(validate(&format!("{{{long}=\"v\"}}"), &l).unwrap_err().reason, Reason::LabelNameTooLong);
        let long = "v".repeat(2049);
        assert_eq!(validate(&format!("{{a=\"{long}\"}}"), &l).unwrap_err().reason, Reason::LabelValueTooLong);
    }
}
