//! Waiting for SIGTERM and SIGINT without a signal handler.
//!
//! The two signals are blocked in the calling thread before any other thread starts (threads
//! inherit the mask), and one thread collects them with `sigwait`. No code runs in signal context,
//! so nothing here needs to be async-signal-safe. std has no signal API, hence the one `unsafe` module.
#![allow(unsafe_code)]

use std::io;

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM (kubelet stopping the pod).
    Term,
    /// SIGINT (Ctrl-C).
    Int,
}

/// The signals we wait for, blocked for delivery so `sigwait` can collect them.
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGTERM and SIGINT in this thread. Call before spawning threads.
    pub fn block() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use, and every pointer
        // passed refers to a live local.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Signals { set })
        }
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub fn wait(&self) -> io::Result<Signal> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` was initialised in `block`; `sig` is a live local.
        let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(if sig == libc::SIGINT {
            Signal::Int
        } else {
            Signal::Term
        })
    }
}
