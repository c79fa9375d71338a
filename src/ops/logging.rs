//! Log setup: `RUST_LOG` (else `--zap-log-level`), human-readable lines or JSON.
//!
//! The HTTP and TLS libraries are capped at `info` whatever `RUST_LOG` says: at `trace` ureq logs
//! request and response headers unredacted, and those carry bearer tokens.

use std::fmt;
use std::io::Write;

use time::OffsetDateTime;

/// Modules whose verbose levels could print credentials.
const CAPPED: [&str; 3] = ["ureq", "ureq_proto", "rustls"];

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per record.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global logger.
pub fn init(format: LogFormat, default_level: &str) {
    let mut b = env_logger::Builder::new();
    b.parse_filters(default_level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    for m in CAPPED {
        b.filter_module(m, log::LevelFilter::Info);
    }
    match format {
        LogFormat::Text => {
            b.format(|buf, r| {
                writeln!(
                    buf,
                    "{} {:<5} {}",
                    Millis(OffsetDateTime::now_utc()),
                    r.level(),
                    r.args()
                )
            });
        }
        LogFormat::Json => {
            b.format(|buf, r| {
                let line = serde_json::json!({
                    "ts": Millis(OffsetDateTime::now_utc()).to_string(),
                    "level": r.level().as_str().to_ascii_lowercase(),
                    "target": r.target(),
                    "msg": r.args().to_string(),
                });
                writeln!(buf, "{line}")
            });
        }
    }
    // A second init (tests) keeps the first logger.
    let _ = b.try_init();
}

/// RFC 3339 UTC with milliseconds, `2006-01-02T15:04:05.000Z`: the stamp env_logger's
/// `timestamp_millis` printed, without the date library it pulls in for it.
struct Millis(OffsetDateTime);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::Millis;

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        let t = datetime!(2006-01-02 15:04:05.0429 UTC);
        assert_eq!(Millis(t).to_string(), "2006-01-02T15:04:05.042Z");
        let epoch = datetime!(1970-01-01 00:00 UTC);
        assert_eq!(Millis(epoch).to_string(), "1970-01-01T00:00:00.000Z");
    }
}
