//! Talking to systemd: READY once the control socket is bound, STOPPING on the way out,
//! RELOADING around SIGHUP, and watchdog pings while the actors answer.
//!
//! Every call is a no-op when djinnd does not run under systemd (no NOTIFY_SOCKET).

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the daemon serves requests, with a status line for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is reloading its configuration.
pub fn reloading() {
    notify(&[NotifyState::Reloading]);
}

/// Tells systemd a reload finished.
pub fn reloaded() {
    notify(&[NotifyState::Ready]);
}

/// Tells systemd the daemon is shutting down.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// One watchdog keep-alive.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// The interval at which to ping the watchdog (half its timeout), if one is set.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}
