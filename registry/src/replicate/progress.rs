//! What a run shows while it works, on stderr (stdout keeps the report): on a terminal one line
//! redrawn in place (images done of those found, bytes sent, the rate, failures); otherwise
//! JSON lines — one per image as it ends, and a progress line every few seconds.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::report::{Failure, ImageReport, Report};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Progress {
    #[default]
    None,
    Terminal,
    JsonLines,
}

/// Counts the report does not keep: images found so far, and blob bytes sent as they go.
#[derive(Default)]
pub(super) struct Tally {
    pub images_found: AtomicU64,
    /// Shared with the streams that send blobs.
    pub bytes_sent: Arc<AtomicU64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    images_done: usize,
    images_found: u64,
    bytes_sent: u64,
    bytes_per_second: u64,
    failed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a ImageReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a Failure>,
}

/// The display: what it has shown so far.
pub(super) struct Display<'a> {
    mode: Progress,
    tally: &'a Tally,
    report: &'a std::sync::Mutex<Report>,
    began: Instant,
    images_seen: usize,
    failures_seen: usize,
    last_line: Instant,
}

impl<'a> Display<'a> {
    pub fn new(mode: Progress, tally: &'a Tally, report: &'a std::sync::Mutex<Report>) -> Display<'a> {
        let now = Instant::now();
        Display { mode, tally, report, began: now, images_seen: 0, failures_seen: 0, last_line: now }
    }

    /// Shows progress until dropped (the caller selects it against the work).
    pub async fn run(&mut self) {
        let every = match self.mode {
            Progress::None => return std::future::pending().await,
            Progress::Terminal => Duration::from_millis(250),
            Progress::JsonLines => Duration::from_millis(500),
        };
        loop {
            tokio::time::sleep(every).await;
            let out = self.tick(false);
            write(out).await;
        }
    }

    /// Shows what is left once the work is done, and leaves a terminal's line complete.
    pub async fn finish(&mut self) {
        let mut out = self.tick(true);
        if self.mode == Progress::Terminal {
            out.push('\n');
        }
        write(out).await;
    }

    /// What shows where the run stands. The report is locked only while the lines are made,
    /// never while they are written.
    fn tick(&mut self, last: bool) -> String {
        {
            let Ok(r) = self.report.lock() else { return String::new() };
            let sent = self.tally.bytes_sent.load(Ordering::Relaxed);
            let secs = self.began.elapsed().as_secs_f64().max(0.001);
            let found = self.tally.images_found.load(Ordering::Relaxed);
            let line = |image, failure| Line {
                images_done: r.images.len(),
                images_found: found,
                bytes_sent: sent,
                bytes_per_second: (sent as f64 / secs) as u64,
                failed: r.failed.len(),
                image,
                failure,
            };
            match self.mode {
                Progress::Terminal => {
                    let l = line(None, None);
                    format!(
                        "\r\x1b[K{} of {} images, {} sent, {}/s, {} failed",
                        l.images_done,
                        l.images_found,
                        berth_core::config::size::approximate(l.bytes_sent),
                        berth_core::config::size::approximate(l.bytes_per_second),
                        l.failed
                    )
                }
                Progress::JsonLines => {
                    let mut lines: Vec<String> = Vec::new();
                    for image in r.images.iter().skip(self.images_seen) {
                        lines.extend(serde_json::to_string(&line(Some(image), None)).ok());
                    }
                    for failure in r.failed.iter().skip(self.failures_seen) {
                        lines.extend(serde_json::to_string(&line(None, Some(failure))).ok());
                    }
                    if last || self.last_line.elapsed() >= LINE_EVERY {
                        lines.extend(serde_json::to_string(&line(None, None)).ok());
                    }
                    if !lines.is_empty() {
                        self.last_line = Instant::now();
                    }
                    (self.images_seen, self.failures_seen) = (r.images.len(), r.failed.len());
                    lines.iter().map(|l| format!("{l}\n")).collect()
                }
                Progress::None => String::new(),
            }
        }
    }
}

/// Writes `out` to stderr off the async threads: a stderr that blocks (a full pipe) must hold
/// up neither the copies nor the runtime.
async fn write(out: String) {
    if out.is_empty() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    })
    .await;
}

/// Between two JSON progress lines, at most.
const LINE_EVERY: Duration = Duration::from_secs(2);
