//! Registry server validation against the allowed suffix list.
