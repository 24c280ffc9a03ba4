//! What every measurement produces.

/// One measured number.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub value: f64,
    /// Larger is better (throughput) or smaller is better (memory, time).
    pub higher_is_better: bool,
}
