//! Wall-clock formatting without a date crate: RFC 3339 for Loki's
//! messages and the IMF-fixdate of HTTP's `Date` header.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn split(ns: i128) -> (i64, u32, u32, u32, u32) {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400) as i64;
    let sod = secs.rem_euclid(86_400) as u32;
    (days, sod / 3600, sod / 60 % 60, sod % 60, frac)
}

/// Go's `time.RFC3339Nano` in UTC: `2006-01-02T15:04:05.999999999Z`, the
/// fraction without trailing zeros.
pub fn rfc3339(ns: i128) -> String {
    let (days, h, m, s, frac) = split(ns);
    let (y, mo, d) = civil(days);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}");
    if frac != 0 {
        let f = format!("{frac:09}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Go's `time.RFC3339` in UTC: whole seconds (the fraction cut off), as
/// Loki's distributor words timestamps.
pub fn rfc3339_secs(ns: i128) -> String {
    rfc3339(ns - ns.rem_euclid(1_000_000_000))
}

/// Go's `Time.String()` in UTC, `2006-01-02 15:04:05.999999999 +0000 UTC`,
/// as Loki's ingester words an entry's timestamp.
pub fn go_string(ns: i128) -> String {
    format!("{} +0000 UTC", rfc3339(ns).trim_end_matches('Z').replacen('T', " ", 1))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(ns: i128) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, h, m, s, _) = split(ns);
    let (y, mo, d) = civil(days);
    let wd = DAYS[days.rem_euclid(7) as usize];
    format!("{wd}, {d:02} {} {y:04} {h:02}:{m:02}:{s:02} GMT", MONTHS[mo as usize - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123_000_000), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_secs(1_700_000_000_999_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(go_string(1_700_000_000_123_000_000), "2023-11-14 22:13:20.123 +0000 UTC");
        assert_eq!(go_string(1_700_000_000_000_000_000), "2023-11-14 22:13:20 +0000 UTC");
        assert_eq!(http_date(784_111_777_000_000_000), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
