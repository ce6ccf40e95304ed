//! One Docker-engine session skeleton for the engine providers (docker, swarm): connect,
//! subscribe to events, list, re-list after each burst of relevant events (debounced, capped)
//! and every poll period, send a snapshot only when it differs from the last one sent, and report
//! a failed session (`ProviderReport::SyncFailed`) before `watch::reconnecting` backs off and
//! starts a new one. A provider supplies only what differs (`Source`): its names, connection,
//! event filter and classification, poll period and the list itself.
//!
//! One behaviour on errors, decided here for both: a failed list ends the session (reported,
//! last catalog kept, reconnect with backoff); a broken or ended event stream does not — the
//! session lists at once (a dead engine fails that list, so an outage is seen immediately) and
//! then polls every `Source::refresh`, or every `POLL_WITHOUT_EVENTS` for a provider that
//! otherwise relies on events (an engine or socket proxy that refuses `/events` still works).
//! New catalog problems (skipped containers or services) are logged once each.
//! Must never: send a partial snapshot, or a snapshot equal to the last one sent (except once
//! after an outage, so the control loop clears the provider's sync error).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::docker::DockerError;
use super::watch::{reconnecting, WatchState};
use crate::catalog::{Catalog, ProviderReport, ProviderSender};
use crate::config::TlsFiles;

/// Quiet time after a relevant event before re-listing (events come in bursts).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A steady stream of events still re-lists at least this often.
const DEBOUNCE_CAP: Duration = Duration::from_millis(300);
/// Poll period of a provider without its own (`Source::refresh` is `None`) once its event
/// stream is gone.
pub(crate) const POLL_WITHOUT_EVENTS: Duration = Duration::from_secs(15);
/// After an event that asks to be followed (`Wake::Follow`), list every `FOLLOW_STEP` for
/// `FOLLOW_FOR`: tasks of a changed Swarm service start over several seconds.
const FOLLOW_FOR: Duration = Duration::from_secs(10);
const FOLLOW_STEP: Duration = Duration::from_secs(1);

/// What an engine event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Not relevant to this provider.
    Ignore,
    /// Re-list after the burst.
    Relist,
    /// Re-list after the burst, then keep listing every second for a while.
    Follow,
}

/// What a provider supplies to the session skeleton.
pub(crate) trait Source: Sync {
    /// The provider's name in reports and entries (`docker`, `swarm`).
    const PROVIDER: &'static str;
    /// The engine as logs name it (`docker`, `swarm manager`).
    const WHAT: &'static str;
    /// How to reach the engine: its endpoint and client-certificate files.
    fn endpoint(&self) -> (&str, Option<&TlsFiles>);
    /// The engine-side event filter (an optimisation: `classify` decides).
    fn events(&self) -> EventsOptions;
    fn classify(&self, ev: &EventMessage) -> Wake;
    /// List this often even without events (`None`: only after events, unless the stream is
    /// gone).
    fn refresh(&self) -> Option<Duration>;
    /// The full catalog now.
    fn list(&self, docker: &Docker) -> impl Future<Output = Result<Catalog, DockerError>> + Send;
}

/// Starts a provider: its `Source` once its constraints parsed (an invalid expression is logged
/// and the provider stays off; `run` validates constraints before anything serves), then
/// `run` until `shutdown`.
pub(crate) async fn start<S: Source>(
    made: Result<S, super::constraints::ConstraintError>,
    reports: ProviderSender,
    shutdown: watch::Receiver<bool>,
) {
    let src = match made {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}; the {} provider is off", S::PROVIDER);
            return;
        }
    };
    info!(endpoint = %src.endpoint().0, refresh = ?src.refresh(), "{} provider watching", S::PROVIDER);
    run(src, reports, shutdown).await;
}

/// Runs sessions until `shutdown` turns true or the control loop goes away. Never returns an
/// error: failures are reported, logged once per outage and retried.
pub(crate) async fn run<S: Source>(
    src: S,
    reports: ProviderSender,
    shutdown: watch::Receiver<bool>,
) {
    let (src, reports) = (&src, &reports);
    reconnecting(S::WHAT, shutdown, |mut st| async move {
        let end = session(src, reports, &mut st).await;
        if let Err((e, _)) = &end {
            let _ = reports.try_send(ProviderReport::SyncFailed {
                provider: S::PROVIDER,
                error: e.to_string(),
            });
        }
        (st, end)
    })
    .await;
}

/// When the next list is due, given how the last one went.
fn next_poll(refresh: Option<Duration>, events_open: bool, following: bool) -> Option<Duration> {
    let period = match (refresh, events_open) {
        (Some(r), _) => Some(r),
        (None, false) => Some(POLL_WITHOUT_EVENTS),
        (None, true) => None,
    };
    if following {
        Some(period.map_or(FOLLOW_STEP, |p| p.min(FOLLOW_STEP)))
    } else {
        period
    }
}

/// One connection: subscribe, list, then list again as events, polls and follow-ups ask.
/// Returns `Ok` when the control loop is gone, else the error and whether a list succeeded
/// (which resets the backoff).
async fn session<S: Source>(
    src: &S,
    reports: &ProviderSender,
    st: &mut WatchState,
) -> Result<(), (DockerError, bool)> {
    let (endpoint, tls) = src.endpoint();
    let mut listed = false;
    let docker = super::docker::connect(endpoint, tls)
        .await
        .map_err(|e| (e, false))?;
    // The stream is opened by its first poll in the select below; the first list waits one
    // debounce period so the subscription is in place before it and no event falls in between.
    let mut events = std::pin::pin!(docker.events(Some(src.events())));
    let mut events_open = true;
    let mut due = Some(Instant::now() + DEBOUNCE);
    let mut cap: Option<Instant> = None;
    let mut follow_until: Option<Instant> = None;
    loop {
        // `wake` is only awaited while a list is due.
        let wake = due.unwrap_or_else(|| Instant::now() + FOLLOW_FOR);
        tokio::select! {
            ev = events.next(), if events_open => match ev {
                Some(Ok(ev)) => {
                    let wake = src.classify(&ev);
                    if wake != Wake::Ignore {
                        let now = Instant::now();
                        if wake == Wake::Follow {
                            follow_until = Some(now + FOLLOW_FOR);
                        }
                        let limit = *cap.get_or_insert(now + DEBOUNCE_CAP);
                        let soon = (now + DEBOUNCE).min(limit);
                        due = Some(due.map_or(soon, |d| d.min(soon)));
                    }
                }
                broken => {
                    match broken {
                        Some(Err(e)) => debug!(error = %e, "{} event stream failed; listing now, then polling", S::WHAT),
                        _ => debug!("{} event stream ended; listing now, then polling", S::WHAT),
                    }
                    events_open = false;
                    due = Some(Instant::now());
                }
            },
            _ = tokio::time::sleep_until(wake), if due.is_some() => {
                cap = None;
                let now = Instant::now();
                let following = follow_until.is_some_and(|t| t > now);
                due = next_poll(src.refresh(), events_open, following).map(|p| now + p);
                let catalog = src.list(&docker).await.map_err(|e| (e, listed))?;
                listed = true;
                let recovered = st.listed(S::WHAT, endpoint);
                if recovered || st.last_sent.as_ref() != Some(&catalog) {
                    let before = st.last_sent.as_ref().map(|c| c.problems.as_slice()).unwrap_or_default();
                    for p in catalog.problems.iter().filter(|p| !before.contains(p)) {
                        warn!("{p}");
                    }
                    info!(entries = catalog.entries.len(), "{} catalog changed", S::PROVIDER);
                    st.last_sent = Some(catalog.clone());
                    let report = ProviderReport::Snapshot { provider: S::PROVIDER, catalog: Arc::new(catalog) };
                    if reports.send(report).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_follow_the_provider_and_the_event_stream() {
        let s15 = Some(Duration::from_secs(15));
        // Swarm-like: its own refresh, whether events flow or not.
        assert_eq!(next_poll(s15, true, false), s15);
        assert_eq!(next_poll(s15, false, false), s15);
        // Docker-like: events only while they flow, else the fallback poll.
        assert_eq!(next_poll(None, true, false), None);
        assert_eq!(next_poll(None, false, false), Some(POLL_WITHOUT_EVENTS));
        // Following a change lists every second, never slower than the refresh.
        assert_eq!(next_poll(None, true, true), Some(FOLLOW_STEP));
        assert_eq!(
            next_poll(Some(Duration::from_millis(200)), true, true),
            Some(Duration::from_millis(200))
        );
    }
}
