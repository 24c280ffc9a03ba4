//! What collections did (`berth_gc_*`): runs by result, their duration, what they removed, the
//! bytes they freed, the removals a push made wrong, and when one last succeeded.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::report::Report;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    /// `ok`, `cancelled` or `failed`.
    result: &'static str,
    dry_run: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    /// `tag` (by retention), `manifest`, `link` (a blob unlinked from a repository), `blob`
    /// (released), `orphan` (a stored object no metadata knew, released by a scrub) or `upload`
    /// (an object of an upload session gone, deleted by a scrub).
    kind: &'static str,
}

pub struct GcMetrics {
    runs: Family<RunLabels, Counter>,
    duration: Histogram,
    removed: Family<KindLabels, Counter>,
    bytes_freed: Counter,
    conflicts: Counter,
    corrupt: Counter,
    last_success: Gauge,
    queue_depth: Gauge,
    queue_overdue: Gauge,
}

impl Default for GcMetrics {
    fn default() -> Self {
        GcMetrics {
            runs: Family::default(),
            duration: Histogram::new(exponential_buckets(0.05, 3.0, 10)),
            removed: Family::default(),
            bytes_freed: Counter::default(),
            conflicts: Counter::default(),
            corrupt: Counter::default(),
            queue_depth: Gauge::default(),
            queue_overdue: Gauge::default(),
            last_success: Gauge::default(),
        }
    }
}

impl GcMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("gc");
        r.register("runs", "Garbage collections, by result", self.runs.clone());
        r.register("run_duration_seconds", "How long garbage collections took", self.duration.clone());
        r.register("removed", "What real (not dry) collections removed, by kind", self.removed.clone());
        r.register("freed_bytes", "Bytes of the blobs real collections released", self.bytes_freed.clone());
        r.register(
            "conflicts",
            "Removals skipped because a push made the thing needed again",
            self.conflicts.clone(),
        );
        r.register(
            "queue_depth",
            "Repositories queued for review (changed since a collection looked at them)",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_overdue",
            "Queued repositories waiting longer than reviews should take (none run, or they fail)",
            self.queue_overdue.clone(),
        );
        r.register(
            "corrupt_blobs",
            "Stored blobs a verifying scrub found missing or not matching their digest",
            self.corrupt.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "When a real collection last succeeded (unix seconds)",
            self.last_success.clone(),
        );
    }

    /// The review queue as last counted.
    pub fn queue(&self, depth: u64, overdue: u64) {
        self.queue_depth.set(depth as i64);
        self.queue_overdue.set(overdue as i64);
    }

    /// One run's outcome: its report when it succeeded.
    pub fn observe(&self, dry_run: bool, took: Duration, report: Option<&Report>) {
        let result = match report {
            Some(r) if r.cancelled => "cancelled",
            Some(_) => "ok",
            None => "failed",
        };
        self.runs.get_or_create(&RunLabels { result, dry_run }).inc();
        self.duration.observe(took.as_secs_f64());
        let Some(r) = report.filter(|_| !dry_run) else { return };
        let kind = |kind| self.removed.get_or_create(&KindLabels { kind }).clone();
        kind("tag").inc_by(r.tags_removed as u64);
        kind("manifest").inc_by(r.manifests_removed as u64);
        kind("link").inc_by(r.links_removed as u64);
        kind("blob").inc_by(r.blobs.len() as u64);
        self.bytes_freed.inc_by(r.bytes_freed);
        self.conflicts.inc_by(r.conflicts);
        if let Some(s) = &r.scrub {
            kind("orphan").inc_by(s.orphans.len() as u64);
            kind("upload").inc_by(s.upload_objects);
            self.corrupt.inc_by(s.corrupt.len() as u64);
        }
        if !r.cancelled {
            self.last_success.set(crate::meta::now());
        }
    }
}
