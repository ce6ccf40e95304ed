//! The reconnect loop the engine providers (docker, swarm) share: run one session against the
//! engine until it fails, keep the last catalog live, back off (100 ms doubling to 10 s, reset
//! once a session listed successfully) and start a new session, until shutdown or until the
//! control loop is gone. An outage is logged once when it starts and once when it ends.
//! Must never: send a snapshot itself (sessions do) or give up while the router runs.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::catalog::Catalog;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What survives reconnections.
#[derive(Debug, Default)]
pub(crate) struct WatchState {
    /// The last snapshot sent, so an unchanged list sends nothing.
    pub last_sent: Option<Catalog>,
    /// True from the first failure until a list succeeds again (log once per outage).
    pub down: bool,
}

impl WatchState {
    /// A session listed successfully: ends an outage (logged once). Returns whether it did, so
    /// the provider sends its snapshot even if unchanged (the control loop then knows the
    /// provider is back and clears its sync error).
    pub fn listed(&mut self, what: &str, endpoint: &str) -> bool {
        let recovered = self.down;
        if self.down {
            info!(%endpoint, "{what} reachable again");
            self.down = false;
        }
        recovered
    }
}

/// How a session ended: `Ok` when the control loop is gone, else the error and whether the
/// session listed at least once (which resets the backoff).
pub(crate) type SessionEnd<E> = Result<(), (E, bool)>;

/// Runs `session` again and again (see the module comment). `what` names the engine in logs.
pub(crate) async fn reconnecting<E, F, Fut>(
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut session: F,
) where
    E: std::fmt::Display,
    F: FnMut(WatchState) -> Fut,
    Fut: Future<Output = (WatchState, SessionEnd<E>)>,
{
    let mut st = WatchState::default();
    let mut delay = BACKOFF_MIN;
    loop {
        let (back, outcome) = tokio::select! {
            r = session(st) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        st = back;
        match outcome {
            Ok(()) => return,
            Err((e, listed)) => {
                if listed {
                    delay = BACKOFF_MIN;
                }
                if !st.down {
                    warn!(error = %e, "{what} unreachable; keeping the last catalog and retrying");
                    st.down = true;
                } else {
                    debug!(error = %e, retry_in = ?delay, "{what} still unreachable");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}
