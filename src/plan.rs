//! The pure planner: observed objects and now in, ordered writes and the next deadline out.
