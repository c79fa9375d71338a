//! The de-duplicating work queue and the deadline heap.
