//! UTC times as AWS writes them: SigV4's `20240826T220000Z` and STS's ISO 8601 `2024-08-26T22:00:00.123Z`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses SigV4's basic ISO 8601 form, `YYYYMMDDTHHMMSSZ`.
pub(crate) fn parse_basic(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let field = |range: std::ops::Range<usize>| text.get(range).and_then(number);
    from_utc(
        field(0..4)?,
        field(4..6)?,
        field(6..8)?,
        field(9..11)?,
        field(11..13)?,
        field(13..15)?,
    )
}

/// Parses the extended form STS writes `Expiration` in: `YYYY-MM-DDTHH:MM:SS`, optional fractional seconds (dropped),
/// then `Z` or an offset `±HH:MM`.
pub(crate) fn parse_extended(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || [bytes[4], bytes[7], bytes[10], bytes[13], bytes[16]] != *b"--T::" {
        return None;
    }
    let field = |range: std::ops::Range<usize>| text.get(range).and_then(number);
    let local = from_utc(
        field(0..4)?,
        field(5..7)?,
        field(8..10)?,
        field(11..13)?,
        field(14..16)?,
        field(17..19)?,
    )?;
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    if rest == "Z" {
        return Some(local);
    }
    let offset = rest
        .get(1..)
        .filter(|offset| offset.len() == 5 && offset.as_bytes()[2] == b':')?;
    let (hours, minutes) = (number(offset.get(..2)?)?, number(offset.get(3..)?)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let offset = Duration::from_secs(u64::from(hours * 3600 + minutes * 60));
    // A time written with offset +02:00 is two hours ahead of UTC.
    match rest.as_bytes()[0] {
        b'+' => local.checked_sub(offset),
        b'-' => local.checked_add(offset),
        _ => None,
    }
}

/// Unsigned decimal digits only: `u32::from_str` would also take a leading `+`.
fn number(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The instant of a UTC calendar date and time, or `None` for a date that does not exist (31 February, 29 February
/// outside leap years), a time out of range, or one before 1970. Seconds stop at 59: AWS smears leap seconds, so no
/// signer writes a 60.
fn from_utc(year: u32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<SystemTime> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    u64::try_from(seconds)
        .ok()
        .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    #[test]
    fn basic_dates_convert_to_unix_time() {
        assert_eq!(parse_basic("20240826T220000Z"), at(1_724_709_600));
        assert_eq!(parse_basic("19700101T000000Z"), at(0));
        assert_eq!(parse_basic("2024-08-26T22:00Z"), None);
        assert_eq!(parse_basic("20241326T220000Z"), None);
        assert_eq!(parse_basic("2024+826T220000Z"), None);
    }

    #[test]
    fn dates_that_do_not_exist_are_refused() {
        for real in [
            "20240229T000000Z",
            "20000229T000000Z",
            "20240131T235959Z",
            "20241231T000000Z",
        ] {
            assert!(parse_basic(real).is_some(), "{real}");
        }
        for impossible in [
            "20240231T000000Z",
            "20230229T000000Z",
            "19000229T000000Z",
            "20240431T000000Z",
            "20241131T000000Z",
            "20240100T000000Z",
            "20240101T240000Z",
            "20240101T236000Z",
            "20240101T235960Z",
        ] {
            assert_eq!(parse_basic(impossible), None, "{impossible}");
        }
        assert_eq!(parse_extended("2023-02-29T12:00:00Z"), None);
    }

    #[test]
    fn sts_expirations_convert_with_fractions_and_offsets() {
        assert_eq!(parse_extended("2024-08-26T22:00:00Z"), at(1_724_709_600));
        assert_eq!(parse_extended("2024-08-26T22:00:00.661023Z"), at(1_724_709_600));
        assert_eq!(parse_extended("2024-08-27T00:30:00+02:30"), at(1_724_709_600));
        assert_eq!(parse_extended("2024-08-26T21:00:00-01:00"), at(1_724_709_600));
        for broken in [
            "",
            "2024-08-26T22:00:00",
            "2024-08-26T22:00:00.Z",
            "2024-08-26 22:00:00Z",
            "2024-08-26T22:00:00+0200",
            "2024-08-26T22:00:00*02:00",
            "2024-08-26T22:00:00+00:\u{e9}",
            "2024-13-26T22:00:00Z",
        ] {
            assert_eq!(parse_extended(broken), None, "{broken}");
        }
    }
}
