//! Compact records: shared strings and packed label maps for the store's per-object data.

pub mod strmap;
pub mod text;
