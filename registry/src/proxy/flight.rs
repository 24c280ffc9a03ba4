//! One upstream fetch per missing blob, streamed to every client that wants it.
//!
//! ```text
//!                      ┌──► spool file ──► reader 1 (the client that missed)
//! upstream GET ──► task┤                └─► reader 2..n (joined while the fetch runs)
//!                      ├──► hasher
//!                      └──(digest verified)──► spool file adopted by storage + link
//! ```
//! When storage keeps its blobs as files on the same filesystem (the default), the spool file
//! itself becomes the stored blob once verified (`Storage::adopt`: fsync and rename), so every
//! fetched byte is written to disk once; other storage gets a copy written alongside the spool.
//!
//! The fetch runs in its own task, so clients may come and go without affecting it. Readers
//! follow the spool file as it grows (a `watch` channel says how far it got) but are always held
//! one byte short of the end until the digest is verified and the blob committed: a response that
//! fails verification is cut off with an error, so no client ever receives a complete body of
//! wrong content, nothing unverified reaches storage, and a client that has the whole blob finds
//! it cached.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use crate::storage::fs::Appender;
use crate::storage::ByteStream;
use berth_core::oci::Digest;

/// How far a fetch got.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Waiting for the upstream's answer.
    Starting,
    /// Bytes arriving; `size` is the upstream's Content-Length when it sent one.
    Running { size: Option<u64>, written: u64 },
    /// Every byte is in and the digest matched.
    Verified { size: u64 },
    /// The fetch failed; readers get this message.
    Failed(Arc<FlightFailure>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlightFailure {
    /// The upstream does not have the blob.
    NotFound,
    /// Anything else, with a message for the client.
    Error { class: &'static str, message: String },
}

impl FlightFailure {
    /// The failure as recorded for other replicas ([`crate::meta::cache::FetchClaim::Failed`]).
    pub fn to_stored(&self) -> String {
        match self {
            FlightFailure::NotFound => "not_found".into(),
            FlightFailure::Error { class, message } => format!("{class}\n{message}"),
        }
    }

    /// The error a body streaming from the fetch ends with.
    pub fn cut_off(&self) -> io::Error {
        io::Error::other(match self {
            FlightFailure::NotFound => "upstream no longer has the blob".to_owned(),
            FlightFailure::Error { message, .. } => message.clone(),
        })
    }

    /// Reads a failure another replica recorded; classes this build does not know become
    /// `elsewhere` (they only choose the error code).
    pub fn from_stored(s: &str) -> FlightFailure {
        const CLASSES: &[&str] = &[
            "connect",
            "timeout",
            "auth",
            "rate_limited",
            "status_5xx",
            "status_4xx",
            "corrupt",
            "protocol",
            "storage",
            "aborted",
        ];
        if s == "not_found" {
            return FlightFailure::NotFound;
        }
        let (class, message) = s.split_once('\n').unwrap_or(("", s));
        let class = CLASSES.iter().copied().find(|c| *c == class).unwrap_or("elsewhere");
        FlightFailure::Error { class, message: message.to_owned() }
    }
}

pub struct Flight {
    spool: Arc<File>,
    progress: watch::Receiver<Progress>,
}

/// The writing side, owned by the fetch task.
pub struct FlightWriter {
    file: Option<Appender>,
    path: PathBuf,
    tx: watch::Sender<Progress>,
    written: u64,
    size: Option<u64>,
}

pub enum Joined {
    /// This caller runs the fetch.
    Started(Arc<Flight>, FlightWriter),
    /// Another fetch of the same blob is under way.
    Running(Arc<Flight>),
}

#[derive(Default)]
pub struct Flights {
    running: Mutex<HashMap<Digest, Arc<Flight>>>,
}

impl Flights {
    pub fn get(&self, digest: &Digest) -> Option<Arc<Flight>> {
        self.running.lock().ok()?.get(digest).cloned()
    }

    /// Starts a flight for `digest` with a fresh spool file in `dir`, or joins the one that is
    /// already running.
    pub fn start(&self, dir: &Path, digest: &Digest) -> io::Result<Joined> {
        if let Some(f) = self.get(digest) {
            return Ok(Joined::Running(f));
        }
        let path = dir.join(format!("{}-{}", digest.hex(), uuid::Uuid::new_v4().simple()));
        let file = std::fs::OpenOptions::new().create_new(true).read(true).write(true).open(&path)?;
        let reader = file.try_clone()?;
        let (tx, rx) = watch::channel(Progress::Starting);
        let flight = Arc::new(Flight { spool: Arc::new(reader), progress: rx });
        let mut running = self.running.lock().map_err(|_| io::Error::other("flight table poisoned"))?;
        if let Some(existing) = running.get(digest) {
            let existing = existing.clone();
            drop(running);
            let _ = std::fs::remove_file(&path);
            return Ok(Joined::Running(existing));
        }
        running.insert(digest.clone(), flight.clone());
        Ok(Joined::Started(
            flight,
            FlightWriter { file: Some(Appender::new(file)), path, tx, written: 0, size: None },
        ))
    }

    pub fn finish(&self, digest: &Digest) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(digest);
        }
    }
}

impl FlightWriter {
    pub fn begin(&mut self, size: Option<u64>) {
        self.size = size;
        self.tx.send_replace(Progress::Running { size, written: 0 });
    }

    /// Appends a batch to the spool file and tells the readers.
    pub async fn append(&mut self, batch: Vec<Bytes>) -> io::Result<()> {
        let mut file = self.file.take().ok_or_else(|| io::Error::other("spool file already closed"))?;
        let n: u64 = batch.iter().map(|b| b.len() as u64).sum();
        let file = tokio::task::spawn_blocking(move || -> io::Result<Appender> {
            file.append(&batch)?;
            Ok(file)
        })
        .await
        .map_err(io::Error::other)??;
        self.file = Some(file);
        self.written += n;
        self.tx.send_replace(Progress::Running { size: self.size, written: self.written });
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// The spool file's name, until the writer is dropped (or storage adopts the file).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn verified(&self) {
        self.tx.send_replace(Progress::Verified { size: self.written });
    }

    pub fn fail(&self, failure: FlightFailure) {
        self.tx.send_replace(Progress::Failed(Arc::new(failure)));
    }
}

impl Drop for FlightWriter {
    fn drop(&mut self) {
        // A task that ends without a verdict must not leave readers waiting.
        if !matches!(*self.tx.borrow(), Progress::Verified { .. } | Progress::Failed(_)) {
            self.tx.send_replace(Progress::Failed(Arc::new(FlightFailure::Error {
                class: "aborted",
                message: "the upstream fetch stopped".into(),
            })));
        }
        // Readers hold their own handle; the name can go now (unless storage adopted the file,
        // which leaves nothing under this name).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a reader learns before streaming: the outcome of the upstream's answer.
pub enum Answer {
    /// The total size when known (it always is once verified).
    Streaming {
        size: Option<u64>,
    },
    Failed(Arc<FlightFailure>),
}

const READ_CHUNK: u64 = 256 << 10;

impl Flight {
    /// Waits for the upstream's answer (not for the content).
    pub async fn answer(&self) -> Answer {
        let mut rx = self.progress.clone();
        loop {
            match &*rx.borrow_and_update() {
                Progress::Starting => {}
                Progress::Running { size, .. } => return Answer::Streaming { size: *size },
                Progress::Verified { size } => return Answer::Streaming { size: Some(*size) },
                Progress::Failed(f) => return Answer::Failed(f.clone()),
            }
            if rx.changed().await.is_err() {
                return Answer::Failed(Arc::new(FlightFailure::Error {
                    class: "aborted",
                    message: "the upstream fetch stopped".into(),
                }));
            }
        }
    }

    /// Waits for the fetch to end: true when its bytes were verified (and stored, if they could
    /// be), false when it failed.
    pub async fn ended(&self) -> bool {
        let mut rx = self.progress.clone();
        loop {
            match &*rx.borrow_and_update() {
                Progress::Verified { .. } => return true,
                Progress::Failed(_) => return false,
                Progress::Starting | Progress::Running { .. } => {}
            }
            if rx.changed().await.is_err() {
                return matches!(*rx.borrow(), Progress::Verified { .. });
            }
        }
    }

    /// Streams bytes `start..end` (`end` = `None`: to the end) as they arrive.
    pub fn read(self: &Arc<Self>, start: u64, end: Option<u64>) -> ByteStream {
        let state = (self.clone(), self.progress.clone(), start);
        Box::pin(futures_util::stream::unfold(Some(state), move |state| async move {
            let (flight, mut rx, pos) = state?;
            loop {
                let (readable, total) = match &*rx.borrow_and_update() {
                    Progress::Starting => (0, None),
                    // Hold back the last byte until the digest is verified.
                    Progress::Running { written, .. } => (written.saturating_sub(1), None),
                    Progress::Verified { size } => (*size, Some(*size)),
                    Progress::Failed(f) => {
                        return Some((Err(f.cut_off()), None));
                    }
                };
                // A range the spool already holds ends there, not when the fetch does.
                if end.is_some_and(|e| pos >= e) {
                    return None;
                }
                let limit = end.map_or(readable, |e| e.min(readable));
                if pos < limit {
                    let want = (limit - pos).min(READ_CHUNK) as usize;
                    let file = flight.spool.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; want];
                        file.read_exact_at(&mut buf, pos).map(|_| Bytes::from(buf))
                    })
                    .await
                    .map_err(io::Error::other)
                    .and_then(|r| r);
                    return match read {
                        Ok(bytes) => {
                            let next = pos + bytes.len() as u64;
                            Some((Ok(bytes), Some((flight, rx, next))))
                        }
                        Err(e) => Some((Err(e), None)),
                    };
                }
                if total.is_some_and(|t| pos >= end.unwrap_or(t).min(t)) {
                    return None;
                }
                if rx.changed().await.is_err() && !matches!(*rx.borrow(), Progress::Verified { .. }) {
                    return Some((Err(io::Error::other("the upstream fetch stopped")), None));
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::oci::Algorithm;
    use futures_util::{StreamExt, TryStreamExt};

    fn started(j: Joined) -> (Arc<Flight>, FlightWriter) {
        match j {
            Joined::Started(f, w) => (f, w),
            Joined::Running(_) => panic!("expected a new flight"),
        }
    }

    async fn collect(s: ByteStream) -> io::Result<Vec<u8>> {
        s.try_fold(Vec::new(), |mut acc, b| async move {
            acc.extend_from_slice(&b);
            Ok(acc)
        })
        .await
    }

    #[tokio::test]
    async fn readers_follow_the_writer_and_get_the_last_byte_only_after_verification() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::default();
        let d = Digest::of(Algorithm::Sha256, b"hello world");
        let (flight, mut w) = started(flights.start(dir.path(), &d).unwrap());
        assert!(matches!(flights.start(dir.path(), &d).unwrap(), Joined::Running(_)), "a second start joins");
        let reader = tokio::spawn({
            let flight = flight.clone();
            async move { collect(flight.read(0, None)).await }
        });
        let partial = tokio::spawn({
            let flight = flight.clone();
            async move { collect(flight.read(6, Some(9))).await }
        });
        w.begin(Some(11));
        w.append(vec![Bytes::from_static(b"hello "), Bytes::from_static(b"wor")]).await.unwrap();
        w.append(vec![Bytes::from_static(b"ld")]).await.unwrap();
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "the last byte waits for verification");
        w.verified();
        assert_eq!(&reader.await.unwrap().unwrap()[..], b"hello world");
        assert_eq!(&partial.await.unwrap().unwrap()[..], b"wor");
        flights.finish(&d);
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "spool removed");
        // A late reader of the finished flight still gets everything.
        assert_eq!(&collect(flight.read(0, None)).await.unwrap()[..], b"hello world");
    }

    #[tokio::test]
    async fn a_range_the_spool_holds_ends_before_the_fetch_does() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::default();
        let d = Digest::of(Algorithm::Sha256, b"hello world");
        let (flight, mut w) = started(flights.start(dir.path(), &d).unwrap());
        w.begin(Some(11));
        w.append(vec![Bytes::from_static(b"hello wor")]).await.unwrap();
        let head = tokio::time::timeout(std::time::Duration::from_secs(10), collect(flight.read(0, Some(5))));
        assert_eq!(&head.await.expect("the range ends at its end").unwrap()[..], b"hello");
        let middle =
            tokio::time::timeout(std::time::Duration::from_secs(10), collect(flight.read(6, Some(8))));
        assert_eq!(&middle.await.expect("the range ends at its end").unwrap()[..], b"wo");
    }

    #[test]
    fn failures_read_back_as_recorded() {
        for f in [
            FlightFailure::NotFound,
            FlightFailure::Error { class: "rate_limited", message: "upstream hub: 429\nslow down".into() },
        ] {
            assert_eq!(FlightFailure::from_stored(&f.to_stored()), f);
        }
        let unknown = FlightFailure::from_stored("brand_new_class\nwhat happened");
        assert_eq!(unknown, FlightFailure::Error { class: "elsewhere", message: "what happened".into() });
    }

    #[tokio::test]
    async fn a_failed_fetch_is_never_served_whole() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::default();
        let d = Digest::of(Algorithm::Sha256, b"abc");
        let (flight, mut w) = started(flights.start(dir.path(), &d).unwrap());
        let reader = tokio::spawn({
            let flight = flight.clone();
            async move {
                let mut got = Vec::new();
                let mut s = flight.read(0, None);
                while let Some(r) = s.next().await {
                    match r {
                        Ok(b) => got.extend_from_slice(&b),
                        Err(_) => return (got, true),
                    }
                }
                (got, false)
            }
        });
        w.begin(Some(3));
        w.append(vec![Bytes::from_static(b"abX")]).await.unwrap();
        w.fail(FlightFailure::Error { class: "corrupt", message: "digest mismatch".into() });
        let (got, failed) = reader.await.unwrap();
        assert!(failed && got.len() < 3, "{got:?}");
        // A writer dropped without a verdict fails its readers too.
        let (flight, w) = started(flights.start(dir.path(), &Digest::of(Algorithm::Sha256, b"x")).unwrap());
        drop(w);
        assert!(matches!(flight.answer().await, Answer::Failed(_)));
    }
}
