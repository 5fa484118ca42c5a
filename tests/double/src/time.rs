//! The few time formats dockerd writes, done by hand so the double depends on
//! nothing but std (it must keep building while the agent's own crate is
//! being edited).

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, the `timestamps=1` prefix
/// without its trailing space.
pub const PREFIX_LEN: usize = 30;

/// Wall-clock time in nanoseconds since the epoch, like the timestamps
/// dockerd stores with every log message.
pub fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        // A clock before 1970: nothing sensible to do but clamp.
        Err(_) => 0,
    }
}

/// `ns` as dockerd's log prefix: RFC 3339, UTC, always nine fractional
/// digits (Go's `2006-01-02T15:04:05.000000000Z07:00`).
pub fn log_prefix(ns: i64) -> [u8; PREFIX_LEN] {
    let (date, sod, nanos) = split(ns);
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    put_date_time(&mut out, date, sod);
    put(&mut out[20..29], nanos);
    out
}

/// Overwrite the nine fractional digits of a [`log_prefix`].
pub fn put_nanos(prefix: &mut [u8; PREFIX_LEN], nanos: u32) {
    put(&mut prefix[20..29], nanos);
}

/// `ns` as Go's `time.Time` marshals to JSON (RFC3339Nano): the fraction
/// loses its trailing zeros and disappears when zero.
pub fn rfc3339_nano(ns: i64) -> String {
    let full = log_prefix(ns);
    // Keep "YYYY-MM-DDTHH:MM:SS" and as much of the fraction as is non-zero.
    let frac = &full[20..29];
    let keep = frac.iter().rposition(|&b| b != b'0').map_or(0, |i| i + 1);
    let mut s = String::with_capacity(PREFIX_LEN);
    s.push_str(ascii(&full[..19]));
    if keep > 0 {
        s.push('.');
        s.push_str(ascii(&frac[..keep]));
    }
    s.push('Z');
    s
}

/// Go's zero `time.Time` in JSON, which dockerd writes for "never"
/// (`FinishedAt` of a container that never stopped).
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// An HTTP `Date` header value: `Fri, 27 Nov 2026 20:46:17 GMT`.
pub fn http_date(ns: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        // 1970-01-01 was a Thursday.
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Parse a `since=`/`until=` value as dockerd accepts it: `<sec>` or
/// `<sec>.<fraction>` (up to nine digits; fewer are scaled, so `.5` is half a
/// second). Returns nanoseconds since the epoch.
pub fn parse_unix(s: &str) -> Option<i64> {
    let (sec, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    if sec.is_empty() || !sec.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sec: i64 = sec.parse().ok()?;
    let mut nanos: i64 = 0;
    if let Some(f) = frac {
        if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = f.parse::<i64>().ok()? * 10_i64.pow(9 - f.len() as u32);
    }
    sec.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn split(ns: i64) -> (i64, u32, u32) {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32, nanos)
}

fn put_date_time(out: &mut [u8; PREFIX_LEN], days: i64, sod: u32) {
    let (y, m, d) = civil_from_days(days);
    put(&mut out[0..4], y.clamp(0, 9999) as u32);
    put(&mut out[5..7], m);
    put(&mut out[8..10], d);
    put(&mut out[11..13], sod / 3600);
    put(&mut out[14..16], sod / 60 % 60);
    put(&mut out[17..19], sod % 60);
}

fn put(out: &mut [u8], mut v: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn ascii(b: &[u8]) -> &str {
    // Only ever called on the digits and separators written above.
    std::str::from_utf8(b).unwrap_or("?")
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of a day count
/// since 1970-01-01 in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(&log_prefix(1_795_808_902_687_468_145), b"2026-11-27T19:48:22.687468145Z");
        assert_eq!(&log_prefix(0), b"1970-01-01T00:00:00.000000000Z");
        let mut p = log_prefix(1_795_808_902_000_000_000);
        put_nanos(&mut p, 687_468_145);
        assert_eq!(p, log_prefix(1_795_808_902_687_468_145));
        assert_eq!(rfc3339_nano(1_795_808_902_687_468_000), "2026-11-27T19:48:22.687468Z");
        assert_eq!(rfc3339_nano(1_795_808_902_000_000_000), "2026-11-27T19:48:22Z");
        // The capture's Date header: Fri, 27 Nov 2026 20:46:17 GMT.
        assert_eq!(http_date(1_795_812_377_000_000_000), "Fri, 27 Nov 2026 20:46:17 GMT");
    }

    #[test]
    fn parses_since() {
        assert_eq!(parse_unix("12"), Some(12_000_000_000));
        assert_eq!(parse_unix("12.5"), Some(12_500_000_000));
        assert_eq!(parse_unix("12.000000005"), Some(12_000_000_005));
        for bad in ["", ".5", "1.", "1.1234567890", "-1", "1e3", "x"] {
            assert_eq!(parse_unix(bad), None, "{bad}");
        }
    }
}
