//! UTC timestamps and the relative times of the human tables, without a date-time crate.

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn parts(secs: i64) -> (i64, u32, u32, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    (y, mo, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// `YYYY-MM-DDTHH:MM:SSZ` in true UTC.
pub fn iso_utc(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = parts(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `YYYY-MM-DD` in UTC.
pub fn date_utc(secs: i64) -> String {
    let (y, mo, d, ..) = parts(secs);
    format!("{y:04}-{mo:02}-{d:02}")
}

/// Python's `datetime.now(timezone.utc).isoformat().replace('+00:00','Z')`.
pub fn iso_utc_micros(secs: i64, micros: u32) -> String {
    let base = iso_utc(secs);
    if micros == 0 {
        base
    } else {
        format!("{}.{micros:06}Z", &base[..base.len() - 1])
    }
}

/// Parse `YYYY-MM-DDTHH:MM:SS[.frac]Z` back to seconds (None when malformed).
pub fn parse_iso_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // days_from_civil
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Python's `round()` for the relative-time buckets (banker's rounding on .5).
fn py_round(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// mlx-knife's `fmt_time`: `just now`, `5m ago`, `3h ago`, `2d ago`, else the date.
pub fn relative(then: i64, now: i64) -> String {
    let seconds = now - then;
    if seconds < 45 {
        return "just now".into();
    }
    if seconds < 90 {
        return "1m ago".into();
    }
    let minutes = py_round(seconds as f64 / 60.0);
    if minutes < 45 {
        return format!("{minutes}m ago");
    }
    if minutes < 90 {
        return "1h ago".into();
    }
    let hours = py_round(minutes as f64 / 60.0);
    if hours < 24 {
        return format!("{hours}h ago");
    }
    if hours < 36 {
        return "1d ago".into();
    }
    let days = py_round(hours as f64 / 24.0);
    if days < 30 {
        return format!("{days}d ago");
    }
    date_utc(then)
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        // date -u -d @1795631204 +%Y-%m-%dT%H:%M:%SZ → 2026-11-25T18:26:44Z
        assert_eq!(iso_utc(1_795_631_204), "2026-11-25T18:26:44Z");
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(parse_iso_utc("2026-11-25T18:26:44Z"), Some(1_795_631_204));
        assert_eq!(
            parse_iso_utc("2026-11-25T18:26:44.123456Z"),
            Some(1_795_631_204)
        );
        assert_eq!(parse_iso_utc("garbage"), None);
        assert_eq!(iso_utc_micros(0, 5), "1970-01-01T00:00:00.000005Z");
    }

    #[test]
    fn relative_buckets() {
        let now = 1_000_000_000;
        assert_eq!(relative(now - 10, now), "just now");
        assert_eq!(relative(now - 60, now), "1m ago");
        assert_eq!(relative(now - 600, now), "10m ago");
        assert_eq!(relative(now - 3600, now), "1h ago");
        assert_eq!(relative(now - 5 * 3600, now), "5h ago");
        assert_eq!(relative(now - 30 * 3600, now), "1d ago");
        assert_eq!(relative(now - 3 * 86_400, now), "3d ago");
        assert_eq!(
            relative(now - 40 * 86_400, now),
            date_utc(now - 40 * 86_400)
        );
    }
}
