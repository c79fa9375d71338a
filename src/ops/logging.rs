//! Log setup: `RUST_LOG` (else `--zap-log-level`), human-readable lines or JSON.
//!
//! The HTTP and TLS libraries are capped at `info` whatever `RUST_LOG` says: at `trace` ureq logs
//! request and response headers unredacted, and those carry bearer tokens.

use std::io::Write;

use time::OffsetDateTime;

use crate::clock::rfc3339;

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
                    rfc3339::format_millis(OffsetDateTime::now_utc()),
                    r.level(),
                    r.args()
                )
            });
        }
        LogFormat::Json => {
            b.format(|buf, r| {
                let line = serde_json::json!({
                    "ts": rfc3339::format_millis(OffsetDateTime::now_utc()),
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

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use crate::clock::rfc3339::format_millis;

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        let t = datetime!(2006-01-02 15:04:05.0429 UTC);
        assert_eq!(format_millis(t), "2006-01-02T15:04:05.042Z");
        let epoch = datetime!(1970-01-01 00:00 UTC);
        assert_eq!(format_millis(epoch), "1970-01-01T00:00:00.000Z");
    }
}
