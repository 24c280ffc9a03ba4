//! Operator metrics: reconciles and failures by kind and error label, and reconcile durations.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    reconciles: std::collections::BTreeMap<&'static str, u64>,
    failures: std::collections::BTreeMap<(&'static str, &'static str), u64>,
    seconds: std::collections::BTreeMap<&'static str, f64>,
}

impl Metrics {
    pub fn observe(&self, kind: &'static str, took: Duration, error: Option<&'static str>) {
        let Ok(mut m) = self.inner.lock() else { return };
        *m.reconciles.entry(kind).or_default() += 1;
        *m.seconds.entry(kind).or_default() += took.as_secs_f64();
        if let Some(e) = error {
            *m.failures.entry((kind, e)).or_default() += 1;
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(m) = self.inner.lock() else { return out };
        let _ = writeln!(out, "# HELP berth_operator_reconciles_total Reconciles by kind.\n# TYPE berth_operator_reconciles_total counter");
        for (k, v) in &m.reconciles {
            let _ = writeln!(out, "berth_operator_reconciles_total{{kind=\"{k}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP berth_operator_reconcile_failures_total Failed reconciles by kind and error.\n# TYPE berth_operator_reconcile_failures_total counter");
        for ((k, e), v) in &m.failures {
            let _ =
                writeln!(out, "berth_operator_reconcile_failures_total{{kind=\"{k}\",error=\"{e}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP berth_operator_reconcile_seconds_total Time spent reconciling by kind.\n# TYPE berth_operator_reconcile_seconds_total counter");
        for (k, v) in &m.seconds {
            let _ = writeln!(out, "berth_operator_reconcile_seconds_total{{kind=\"{k}\"}} {v}");
        }
        out
    }
}
