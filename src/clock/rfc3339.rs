//! RFC 3339 timestamps as the Kubernetes API writes them, always UTC with `Z`: whole seconds for
//! `metav1.Time` (status times, Secret annotations, condition times, messages) and microseconds
//! for `metav1.MicroTime` (Event and Lease times); milliseconds for log lines.

use time::format_description::well_known::Rfc3339;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const SECONDS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
// Truncated, not rounded, to six digits, as Go's `time.Format` does.
const MICROS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
const MILLIS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `2006-01-02T15:04:05Z`: whole seconds, the fraction dropped.
pub fn format_seconds(t: OffsetDateTime) -> String {
    format(t, SECONDS, "1970-01-01T00:00:00Z")
}

/// `2006-01-02T15:04:05.000000Z`: six fraction digits.
pub fn format_micros(t: OffsetDateTime) -> String {
    format(t, MICROS, "1970-01-01T00:00:00.000000Z")
}

/// `2006-01-02T15:04:05.000Z`: three fraction digits (log lines, as env_logger's
/// `timestamp_millis` printed them).
pub fn format_millis(t: OffsetDateTime) -> String {
    format(t, MILLIS, "1970-01-01T00:00:00.000Z")
}

fn format(t: OffsetDateTime, items: &[BorrowedFormatItem<'_>], epoch: &str) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(items)
        // An OffsetDateTime has every component the descriptions name, so this cannot fail; the
        // epoch keeps the output a valid time all the same.
        .unwrap_or_else(|_| epoch.to_owned())
}

/// An RFC 3339 time at full precision, in whatever offset it was written; `None` when it does
/// not parse.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// As [`parse`], truncated to whole seconds (what [`format_seconds`] keeps), so a time read back
/// compares equal to the one written.
pub fn parse_seconds(s: &str) -> Option<OffsetDateTime> {
    parse(s)?.replace_nanosecond(0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn seconds_are_utc_without_a_fraction() {
        let t = parse_seconds("2006-01-02T17:04:05.75+02:00").expect("valid");
        assert_eq!(format_seconds(t), "2006-01-02T15:04:05Z");
        assert_eq!(
            format_seconds(datetime!(2006-01-02 17:04:05.999 +02:00)),
            "2006-01-02T15:04:05Z"
        );
        assert_eq!(
            format_seconds(datetime!(0001-02-03 04:05:06 UTC)),
            "0001-02-03T04:05:06Z"
        );
    }

    #[test]
    fn micros_are_utc_with_six_truncated_digits() {
        assert_eq!(
            format_micros(datetime!(2006-01-02 17:04:05.5 +02:00)),
            "2006-01-02T15:04:05.500000Z"
        );
        assert_eq!(
            format_micros(datetime!(2026-01-02 03:04:05.123456789 UTC)),
            "2026-01-02T03:04:05.123456Z"
        );
    }

    #[test]
    fn parse_keeps_the_fraction_and_the_offset_and_parse_seconds_drops_the_fraction() {
        let t = parse("2006-01-02T17:04:05.75+02:00").expect("valid");
        assert_eq!(t, datetime!(2006-01-02 17:04:05.75 +02:00));
        assert_eq!(t.offset(), UtcOffset::from_hms(2, 0, 0).expect("valid"));
        assert_eq!(
            parse_seconds("2006-01-02T15:04:05.75Z"),
            Some(datetime!(2006-01-02 15:04:05 UTC))
        );
        assert_eq!(parse("2006-01-02T15:04:05"), None, "an offset is required");
        assert_eq!(parse_seconds(""), None);
    }

    #[test]
    fn what_is_written_reads_back() {
        let t = datetime!(2026-03-04 05:06:07.891 UTC);
        assert_eq!(
            parse_seconds(&format_seconds(t)),
            Some(datetime!(2026-03-04 05:06:07 UTC))
        );
        assert_eq!(
            parse(&format_micros(t)),
            Some(datetime!(2026-03-04 05:06:07.891 UTC))
        );
    }
}
