//! Whether a connection is serving anything: its requests count themselves in and out, its
//! socket's quiet clock reads the count ([`super::connection::StallGuard`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

/// Whether a connection is serving anything: its requests count themselves in and out (from
/// the head's arrival until the response's body is dropped), and its socket reads this.
#[derive(Default)]
pub struct Activity {
    pub(super) requests: AtomicUsize,
    /// Requests ended so far: each end starts the quiet clock again.
    pub(super) ended: AtomicU64,
    /// The socket's reader, woken when the last request ends (so it starts the clock).
    pub(super) reader: AtomicWaker,
    /// Told when the quiet clock runs out: [`super::connection::Serving::serve`] then asks the
    /// connection to finish.
    pub(super) gone_quiet: Notify,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    /// Counts a request in until the returned value is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight on a connection ([`Activity::begin`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::AcqRel);
        if self.0.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}
