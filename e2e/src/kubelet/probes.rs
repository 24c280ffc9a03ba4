//! Readiness, liveness and startup probes: HTTP GET and TCP against the pod's IP.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Tracks one probe's schedule and consecutive results.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub probe: Probe,
    next_at: tokio::time::Instant,
    successes: i32,
    failures: i32,
    /// The verdict after the thresholds: `None` until the first one is reached.
    pub passing: Option<bool>,
}

impl ProbeState {
    pub fn new(probe: Probe, started: tokio::time::Instant) -> ProbeState {
        let delay = probe.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        ProbeState {
            probe,
            next_at: started + Duration::from_secs(delay),
            successes: 0,
            failures: 0,
            passing: None,
        }
    }

    pub fn due(&self) -> bool {
        tokio::time::Instant::now() >= self.next_at
    }

    /// Records one result; returns the verdict when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        let period = self.probe.period_seconds.unwrap_or(10).max(1) as u64;
        self.next_at = tokio::time::Instant::now() + Duration::from_secs(period);
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
            Some(true)
        } else if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
            Some(false)
        } else {
            None
        };
        match verdict {
            Some(v) if self.passing != Some(v) => {
                self.passing = Some(v);
                Some(v)
            }
            _ => None,
        }
    }
}

fn port(c: &Container, p: &IntOrString) -> Option<i32> {
    match p {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port)
            .or_else(|| name.parse().ok()),
    }
}

/// Runs the probe once against `ip`. Exec probes are not supported by the process kubelet and
/// count as failures, with a log line saying so.
pub async fn check(c: &Container, probe: &Probe, ip: &str, http: &reqwest::Client) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(h) = &probe.http_get {
        let Some(port) = port(c, &h.port) else { return false };
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let path = h.path.as_deref().unwrap_or("/");
        let host = h.host.as_deref().unwrap_or(ip);
        let url = format!("{scheme}://{host}:{port}{path}");
        let mut req = http.get(&url).timeout(timeout);
        for hdr in h.http_headers.iter().flatten() {
            req = req.header(&hdr.name, &hdr.value);
        }
        return matches!(req.send().await, Ok(r) if (200..400).contains(&r.status().as_u16()));
    }
    if let Some(t) = &probe.tcp_socket {
        let Some(port) = port(c, &t.port) else { return false };
        let addr = format!("{}:{port}", t.host.as_deref().unwrap_or(ip));
        return matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        );
    }
    if probe.exec.is_some() {
        tracing::warn!(container = %c.name, "exec probes are not supported by berth-kubelet");
    }
    false
}

/// The client probes use. Like a real kubelet it does not verify the certificate of an HTTPS probe.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .unwrap_or_default()
}
