//! Buffer sizes for every HTTP connection acrpull keeps open.
//!
//! ureq's default buffers are sized for bulk transfers, and the TLS layer adds a second pair on
//! top, for each of the dozen pooled connections (watches, workers, Events, leader election,
//! Azure). Kubernetes and Azure answer with small headers, and bodies stream through these buffers rather
//! than into them, so small buffers cost no extra requests, only a few more reads of a large
//! list page.

/// Read buffer per connection (and per TLS layer). It must hold a whole response header.
pub const INPUT: usize = 32 * 1024;
/// Write buffer per connection (and per TLS layer). It must hold a whole request header,
/// bearer token included.
pub const OUTPUT: usize = 16 * 1024;
/// The largest response header accepted; no larger than [`INPUT`], or a header that fills the
/// buffer could never be parsed.
pub const MAX_RESPONSE_HEADER: usize = INPUT;
