//! The two AcrPullBinding API versions decoded into one internal model.
