//! `limits:` — how much any one client, request or connection may take.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_manifest_bytes")]
    pub max_manifest_bytes: u64,
    /// Upload sessions no request has touched for this long are abandoned and removed; one with a
    /// request still sending to it is in use.
    #[serde(default = "default_upload_ttl", with = "duration")]
    pub upload_ttl: Duration,
    /// How long in-flight requests may run after a shutdown signal.
    #[serde(default = "default_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// After a shutdown signal, how long new connections are still accepted while `/readyz`
    /// answers 503 and every response closes its connection, so load balancers (Kubernetes
    /// endpoints) stop sending traffic here before the listener closes.
    #[serde(default, with = "duration")]
    pub shutdown_delay: Duration,
    /// A request body that sends nothing for this long, or a client that takes nothing of a
    /// response for this long, is cut off (slow or stalled clients); an upload stays resumable.
    #[serde(default = "default_body_idle", with = "duration")]
    pub body_idle_timeout: Duration,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    #[serde(default = "default_header_bytes")]
    pub max_header_bytes: u64,
    /// Upload sessions one client may hold open at once (by user or robot; anonymous clients by
    /// address); more get 429.
    #[serde(default = "default_uploads_per_client")]
    pub max_uploads_per_client: usize,
    /// Chunks one upload session may hold; more get 400 (clients then send larger chunks).
    #[serde(default = "default_upload_chunks")]
    pub max_upload_chunks: u32,
    /// Connections served at once; one more is answered 503 and closed.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// A TLS client that has not finished its handshake in this time is disconnected.
    #[serde(default = "default_handshake", with = "duration")]
    pub tls_handshake_timeout: Duration,
    /// A connection left without a request in flight this long (since it opened, or since its
    /// last request ended) is closed, whatever it sends meanwhile; so is one whose request head
    /// takes this long. Behind a load balancer, make it longer than the balancer's own idle timeout.
    #[serde(default = "default_idle", with = "duration")]
    pub idle_timeout: Duration,
    /// Most bytes of descriptors (annotations included) one page of a referrers list holds,
    /// past its first; the list goes on in the page its `Link` names. Not written out when it is
    /// the default, so configs rendered before it existed keep their hash.
    #[serde(
        default = "default_referrers_page_bytes",
        skip_serializing_if = "is_default_referrers_page_bytes"
    )]
    pub referrers_page_bytes: u64,
}

fn default_referrers_page_bytes() -> u64 {
    2 << 20
}

fn is_default_referrers_page_bytes(v: &u64) -> bool {
    *v == default_referrers_page_bytes()
}

fn default_idle() -> Duration {
    Duration::from_secs(30)
}

fn default_uploads_per_client() -> usize {
    256
}

fn default_upload_chunks() -> u32 {
    10_000
}

fn default_connections() -> usize {
    4096
}

fn default_handshake() -> Duration {
    Duration::from_secs(10)
}

fn default_body_idle() -> Duration {
    Duration::from_secs(60)
}

fn default_header_bytes() -> u64 {
    64 << 10
}

fn default_manifest_bytes() -> u64 {
    4 << 20
}

fn default_upload_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_grace() -> Duration {
    Duration::from_secs(30)
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_manifest_bytes: default_manifest_bytes(),
            upload_ttl: default_upload_ttl(),
            shutdown_grace: default_grace(),
            shutdown_delay: Duration::ZERO,
            body_idle_timeout: default_body_idle(),
            max_header_bytes: default_header_bytes(),
            max_uploads_per_client: default_uploads_per_client(),
            max_upload_chunks: default_upload_chunks(),
            max_connections: default_connections(),
            tls_handshake_timeout: default_handshake(),
            idle_timeout: default_idle(),
            referrers_page_bytes: default_referrers_page_bytes(),
        }
    }
}

impl LimitsConfig {
    /// The offending field (under `limits.`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let at_least = |ok: bool, field: &'static str, min: &str| {
            if ok {
                Ok(())
            } else {
                Err((field, format!("must be at least {min}")))
            }
        };
        at_least(self.max_manifest_bytes >= 1024, "limits.max_manifest_bytes", "1024")?;
        at_least(self.body_idle_timeout >= Duration::from_secs(1), "limits.body_idle_timeout", "1s")?;
        at_least(self.max_header_bytes >= 8192, "limits.max_header_bytes", "8192")?;
        at_least(self.upload_ttl >= Duration::from_secs(60), "limits.upload_ttl", "1m")?;
        at_least(self.max_upload_chunks >= 1, "limits.max_upload_chunks", "1")?;
        at_least(self.max_uploads_per_client >= 1, "limits.max_uploads_per_client", "1")?;
        at_least(self.max_connections >= 1, "limits.max_connections", "1")?;
        at_least(
            self.tls_handshake_timeout >= Duration::from_millis(100),
            "limits.tls_handshake_timeout",
            "100ms",
        )?;
        at_least(self.referrers_page_bytes >= 1024, "limits.referrers_page_bytes", "1024")?;
        at_least(self.idle_timeout >= Duration::from_millis(100), "limits.idle_timeout", "100ms")
    }
}
