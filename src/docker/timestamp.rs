//! RFC 3339 timestamps as dockerd writes them in front of each log message
//! when `timestamps=1`: `2006-01-02T15:04:05.000000000Z` (Go's RFC3339Nano
//! with a fixed nine-digit fraction), then one space.
//!
//! Log plugins may write a numeric offset (`+02:00`) or fewer fractional
//! digits, so both are accepted. Parsing never allocates; the result is
//! nanoseconds since the Unix epoch in UTC, which is what `since=` wants and
//! what we compare when dropping duplicates after a rotation.

use std::fmt;

/// Length of the UTC form we write: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub const FORMATTED_LEN: usize = 30;

/// The longest prefix we will look at before giving up: the UTC form, or a
/// `+hh:mm` offset instead of `Z` (35 bytes), with slack for nothing else.
pub const MAX_LEN: usize = 35;

/// Why a byte string is not a timestamp. Positions are byte offsets into the
/// timestamp text, so an operator can find the bad byte in a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampError {
    /// Ended before the offset (`Z` or `±hh:mm`).
    Truncated,
    /// A byte that cannot stand at this position.
    Unexpected { at: usize, byte: u8 },
    /// Well-formed, but a field is outside its range (month 13, 31 April…).
    FieldRange { field: &'static str },
    /// More than nine fractional digits: nanoseconds are our resolution.
    FractionTooLong,
    /// Bytes after the offset.
    Trailing { at: usize },
    /// Outside what i64 nanoseconds can hold (years 1677 to 2262).
    OutOfRange,
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => write!(f, "timestamp ends early"),
            Self::Unexpected { at, byte } => {
                write!(f, "unexpected byte 0x{byte:02x} at position {at} of timestamp")
            }
            Self::FieldRange { field } => write!(f, "timestamp {field} out of range"),
            Self::FractionTooLong => write!(f, "timestamp has more than 9 fractional digits"),
            Self::Trailing { at } => write!(f, "unexpected bytes after timestamp at position {at}"),
            Self::OutOfRange => write!(f, "timestamp outside the years 1677 to 2262"),
        }
    }
}

impl std::error::Error for TimestampError {}

/// Parse an RFC 3339 timestamp into nanoseconds since the epoch (UTC).
///
/// Accepts `T` or `t` as the date/time separator, `Z`/`z` or `±hh:mm` as the
/// offset, and zero to nine fractional digits. The whole input must be the
/// timestamp; the caller splits off the trailing space.
pub fn parse(s: &[u8]) -> Result<i64, TimestampError> {
    let mut p = Cursor { s, at: 0 };
    let year = p.digits(4)?;
    p.expect(b'-')?;
    let month = p.digits(2)?;
    p.expect(b'-')?;
    let day = p.digits(2)?;
    p.expect_either(b'T', b't')?;
    let hour = p.digits(2)?;
    p.expect(b':')?;
    let minute = p.digits(2)?;
    p.expect(b':')?;
    let second = p.digits(2)?;

    let mut nanos: u32 = 0;
    if p.peek() == Some(b'.') {
        p.at += 1;
        let start = p.at;
        let mut scale = 100_000_000;
        while let Some(b @ b'0'..=b'9') = p.peek() {
            if p.at - start == 9 {
                return Err(TimestampError::FractionTooLong);
            }
            nanos += u32::from(b - b'0') * scale;
            scale /= 10;
            p.at += 1;
        }
        if p.at == start {
            return Err(p.unexpected());
        }
    }

    let offset_secs: i64 = match p.peek() {
        Some(b'Z' | b'z') => {
            p.at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            p.at += 1;
            let oh = p.digits(2)?;
            p.expect(b':')?;
            let om = p.digits(2)?;
            if oh > 23 || om > 59 {
                return Err(TimestampError::FieldRange { field: "offset" });
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        Some(_) => return Err(p.unexpected()),
        None => return Err(TimestampError::Truncated),
    };
    if p.at != s.len() {
        return Err(TimestampError::Trailing { at: p.at });
    }

    if !(1..=12).contains(&month) {
        return Err(TimestampError::FieldRange { field: "month" });
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(TimestampError::FieldRange { field: "day" });
    }
    if hour > 23 {
        return Err(TimestampError::FieldRange { field: "hour" });
    }
    if minute > 59 {
        return Err(TimestampError::FieldRange { field: "minute" });
    }
    // Go never writes a leap second, and `time.Parse` rejects one.
    if second > 59 {
        return Err(TimestampError::FieldRange { field: "second" });
    }

    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    let ns = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    i64::try_from(ns).map_err(|_| TimestampError::OutOfRange)
}

/// [`parse`] with a fast path for the exact form dockerd writes
/// (`YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`), remembering the last date's day
/// number: consecutive log lines almost always share their date, and the
/// calendar arithmetic was a third of the decode pipeline's time.
#[derive(Debug, Clone, Default)]
pub struct Parser {
    date: [u8; 10],
    days: Option<i64>,
}

impl Parser {
    pub fn parse(&mut self, s: &[u8]) -> Result<i64, TimestampError> {
        if let Some(ns) = self.fast(s) {
            return Ok(ns);
        }
        let ns = parse(s)?;
        if s.len() == FORMATTED_LEN && s[29] == b'Z' {
            self.date.copy_from_slice(&s[..10]);
            self.days = Some(ns.div_euclid(86_400 * 1_000_000_000));
        }
        Ok(ns)
    }

    fn fast(&self, s: &[u8]) -> Option<i64> {
        let days = self.days?;
        if s.len() != FORMATTED_LEN || s[..10] != self.date || s[10] != b'T' || s[29] != b'Z' {
            return None;
        }
        if s[13] != b':' || s[16] != b':' || s[19] != b'.' {
            return None;
        }
        let two = |i: usize| -> Option<i64> {
            let (a, b) = (s[i].wrapping_sub(b'0'), s[i + 1].wrapping_sub(b'0'));
            (a < 10 && b < 10).then(|| i64::from(a * 10 + b))
        };
        let (h, m, sec) = (two(11)?, two(14)?, two(17)?);
        if h > 23 || m > 59 || sec > 59 {
            return None;
        }
        let mut frac = 0i64;
        for &b in &s[20..29] {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            frac = frac * 10 + i64::from(d);
        }
        let secs = days * 86_400 + h * 3600 + m * 60 + sec;
        secs.checked_mul(1_000_000_000)?.checked_add(frac)
    }
}

/// Write `ns` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, the form dockerd writes.
pub fn format(ns: i64) -> [u8; FORMATTED_LEN] {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    put(&mut out[0..4], year as u32);
    put(&mut out[5..7], month);
    put(&mut out[8..10], day);
    put(&mut out[11..13], sod / 3600);
    put(&mut out[14..16], sod / 60 % 60);
    put(&mut out[17..19], sod % 60);
    put(&mut out[20..29], nanos);
    out
}

/// Write `ns` as the `since=` value dockerd accepts: `<sec>.<9 digits>`.
/// Negative values (before 1970) are clamped to 0: dockerd rejects them.
pub fn format_since(ns: i64) -> String {
    let ns = ns.max(0);
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// An HTTP `Date` value in the one form HTTP/1.1 servers send (IMF-fixdate,
/// RFC 9110 5.6.7; Go's `http.TimeFormat`): `Sun, 06 Nov 1994 08:49:37 GMT`.
/// Nanoseconds since the epoch, whole seconds. The obsolete forms are not
/// read: dockerd never sends them, and a `Date` we cannot read is ignored.
pub fn parse_http_date(v: &[u8]) -> Option<i64> {
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let v = v.trim_ascii();
    if v.len() != 29 || &v[3..5] != b", " || &v[25..] != b" GMT" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = &v[r];
        d.iter().all(u8::is_ascii_digit).then(|| d.iter().fold(0, |n, &b| n * 10 + u32::from(b - b'0')))
    };
    let sep = |i: usize, c: u8| v[i] == c;
    if !(sep(7, b' ') && sep(11, b' ') && sep(16, b' ') && sep(19, b':') && sep(22, b':')) {
        return None;
    }
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| m.as_slice() == &v[8..11])? as u32 + 1;
    let year = num(12..16)?;
    let (h, m, s) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if day == 0 || day > days_in_month(year, month) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(i64::from(year), month, day) * 86_400
        + i64::from(h) * 3600
        + i64::from(m) * 60
        + i64::from(s);
    secs.checked_mul(1_000_000_000)
}

/// Fill `out` with the decimal digits of `v`, zero-padded on the left.
fn put(out: &mut [u8], mut v: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn is_leap(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, valid far beyond the range i64 nanoseconds can hold).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn unexpected(&self) -> TimestampError {
        match self.peek() {
            Some(byte) => TimestampError::Unexpected { at: self.at, byte },
            None => TimestampError::Truncated,
        }
    }

    fn digits(&mut self, n: usize) -> Result<u32, TimestampError> {
        let mut v = 0;
        for _ in 0..n {
            match self.peek() {
                Some(b @ b'0'..=b'9') => v = v * 10 + u32::from(b - b'0'),
                _ => return Err(self.unexpected()),
            }
            self.at += 1;
        }
        Ok(v)
    }

    fn expect(&mut self, want: u8) -> Result<(), TimestampError> {
        self.expect_either(want, want)
    }

    fn expect_either(&mut self, a: u8, b: u8) -> Result<(), TimestampError> {
        match self.peek() {
            Some(c) if c == a || c == b => {
                self.at += 1;
                Ok(())
            }
            _ => Err(self.unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<i64, TimestampError> {
        parse(s.as_bytes())
    }

    #[test]
    fn dockerd_form() {
        // date -u -d @1795808902.687468145
        assert_eq!(p("2026-11-27T19:48:22.687468145Z"), Ok(1_795_808_902_687_468_145));
        assert_eq!(p("1970-01-01T00:00:00.000000000Z"), Ok(0));
    }

    #[test]
    fn fewer_fraction_digits_and_none() {
        assert_eq!(p("1970-01-01T00:00:01.5Z"), Ok(1_500_000_000));
        assert_eq!(p("1970-01-01T00:00:01.000001Z"), Ok(1_000_001_000));
        assert_eq!(p("1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert_eq!(p("1970-01-01t00:00:01z"), Ok(1_000_000_000));
    }

    #[test]
    fn offsets() {
        assert_eq!(p("1970-01-01T02:00:00+02:00"), Ok(0));
        assert_eq!(p("1969-12-31T22:30:00-01:30"), Ok(0));
        assert_eq!(p("1970-01-01T00:00:00+24:00"), Err(TimestampError::FieldRange { field: "offset" }));
    }

    #[test]
    fn before_epoch() {
        assert_eq!(p("1969-12-31T23:59:59.999999999Z"), Ok(-1));
        assert_eq!(&format(-1), b"1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn rejects() {
        use TimestampError::*;
        assert_eq!(p(""), Err(Truncated));
        assert_eq!(p("2026-11-27"), Err(Truncated));
        assert_eq!(p("2026-11-27T19:48:22"), Err(Truncated));
        assert_eq!(p("2026-11-27 19:48:22Z"), Err(Unexpected { at: 10, byte: b' ' }));
        assert_eq!(p("2026-11-27T19:48:22.Z"), Err(Unexpected { at: 20, byte: b'Z' }));
        assert_eq!(p("2026-11-27T19:48:22.1234567890Z"), Err(FractionTooLong));
        assert_eq!(p("2026-11-27T19:48:22Z "), Err(Trailing { at: 20 }));
        assert_eq!(p("2026-13-01T00:00:00Z"), Err(FieldRange { field: "month" }));
        assert_eq!(p("2026-04-31T00:00:00Z"), Err(FieldRange { field: "day" }));
        assert_eq!(p("2025-02-29T00:00:00Z"), Err(FieldRange { field: "day" }));
        assert_eq!(p("2026-01-01T24:00:00Z"), Err(FieldRange { field: "hour" }));
        assert_eq!(p("2026-01-01T00:60:00Z"), Err(FieldRange { field: "minute" }));
        assert_eq!(p("2026-01-01T00:00:60Z"), Err(FieldRange { field: "second" }));
        assert_eq!(p("0001-01-01T00:00:00Z"), Err(OutOfRange));
        assert_eq!(p("9999-12-31T23:59:59Z"), Err(OutOfRange));
        assert_eq!(p("2026-01-01T00:00:00.\u{e9}Z"), Err(Unexpected { at: 20, byte: 0xc3 }));
    }

    #[test]
    fn leap_days() {
        assert!(p("2024-02-29T00:00:00Z").is_ok());
        assert!(p("2000-02-29T00:00:00Z").is_ok());
        assert!(p("2100-02-29T00:00:00Z").is_err());
    }

    #[test]
    fn format_round_trips() {
        for ns in [
            0,
            1,
            999_999_999,
            1_795_808_902_687_468_145,
            951_782_400_000_000_000, // 2000-02-29
            -86_400_000_000_001,
            i64::MAX,
            i64::MIN,
        ] {
            let s = format(ns);
            assert_eq!(p(std::str::from_utf8(&s).unwrap()), Ok(ns), "{}", String::from_utf8_lossy(&s));
        }
        assert_eq!(&format(1_795_808_902_687_468_145), b"2026-11-27T19:48:22.687468145Z");
    }

    #[test]
    fn http_dates() {
        // The Date of the captured dockerd responses.
        assert_eq!(parse_http_date(b"Fri, 27 Nov 2026 20:46:17 GMT"), Some(1_795_812_377_000_000_000));
        assert_eq!(parse_http_date(b" Thu, 01 Jan 1970 00:00:00 GMT "), Some(0));
        assert_eq!(parse_http_date(b"Tue, 29 Feb 2028 23:59:59 GMT"), Some(1_835_481_599_000_000_000));
        for bad in [
            &b"Fri, 27 Nov 2026 20:46:17 UTC"[..],
            b"Friday, 27-Nov-26 20:46:17 GMT",
            b"Fri Nov 27 20:46:17 2026",
            b"Fri, 30 Feb 2026 20:46:17 GMT",
            b"Fri, 27 Xyz 2026 20:46:17 GMT",
            b"Fri, 27 Nov 2026 24:46:17 GMT",
            b"Fri, 2x Nov 2026 20:46:17 GMT",
            b"",
        ] {
            assert_eq!(parse_http_date(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let start = days_from_civil(1800, 1, 1);
        for days in start..start + 146_097 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!(d >= 1 && d <= days_in_month(y as u32, m));
        }
    }

    #[test]
    fn cached_parser_agrees_with_parse() {
        let mut p = Parser::default();
        let inputs = [
            "2026-11-27T19:48:22.687468145Z",
            "2026-11-27T19:48:23.000000001Z",
            "2026-11-27T23:59:59.999999999Z",
            "2026-11-28T00:00:00.000000000Z",
            "2026-11-28T24:00:00.000000000Z",
            "2026-11-28T00:00:00.00000000xZ",
            "2026-11-28T00:00:00.000000000+01:00",
            "2026-11-28T00:00:00.5Z",
            "2026-11-28T00:60:00.000000000Z",
            "2026-11-28T00:00:00,000000000Z",
            // Bytes far from digits where digits belong (found by fuzzing:
            // the check must come before the arithmetic).
            "2026-11-28T\u{7f}0:00:00.000000000Z",
            "2026-11-28T00:0\u{7f}:00.000000000Z",
        ];
        for s in inputs.iter().chain(inputs.iter()) {
            assert_eq!(p.parse(s.as_bytes()), parse(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn since_form() {
        assert_eq!(format_since(1_795_808_902_000_000_005), "1795808902.000000005");
        assert_eq!(format_since(-5), "0.000000000");
    }
}
