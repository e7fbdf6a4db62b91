//! The systemd service protocol: readiness, reload and stop notifications, status lines and
//! watchdog pings (`sd_notify(3)`). Every call is a no-op without `$NOTIFY_SOCKET`, so the
//! same binary runs under systemd, in a container or in a terminal.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the appliance serves (after the first reload, or after a reload ended).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd a reload started (`Type=notify-reload` wants the monotonic time with it);
/// [`ready`] ends it.
pub fn reloading(status: &str) {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status(status)];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(error) => tracing::debug!(%error, "no monotonic clock for MONOTONIC_USEC"),
    }
    send(&states);
}

/// Tells systemd the appliance is shutting down (draining).
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Starts the watchdog pings when systemd asked for them (`WatchdogSec=`): one `WATCHDOG=1`
/// every half period, from the async runtime itself, so a wedged runtime misses its pings and
/// systemd restarts it.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    let every = (period / 2).max(Duration::from_millis(10));
    tracing::info!(?period, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
