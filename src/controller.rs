//! Wiring: watchers feed the store and the queue, workers reconcile bindings.
