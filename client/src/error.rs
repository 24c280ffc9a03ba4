//! What can go wrong talking to an upstream, and what it said when it refused.

use reqwest::Response;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} cannot be reached: {detail}")]
    Connect { upstream: String, detail: String },
    #[error("upstream {upstream} did not answer in time")]
    Timeout { upstream: String },
    #[error("upstream {upstream} refused the credentials: {detail}")]
    Auth { upstream: String, detail: String },
    #[error("upstream {upstream} is rate limiting pulls")]
    RateLimited { upstream: String, retry_after: Option<u64> },
    #[error("upstream {upstream} answered {status}: {detail}")]
    Status { upstream: String, status: u16, detail: String },
    #[error("upstream {upstream} sent content that does not match {digest}")]
    Corrupt { upstream: String, digest: String },
    #[error("upstream {upstream}: {detail}")]
    Protocol { upstream: String, detail: String },
}

impl UpstreamError {
    /// A bounded label for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Auth { .. } => "auth",
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Status { status, .. } if *status >= 500 => "status_5xx",
            UpstreamError::Status { .. } => "status_4xx",
            UpstreamError::Corrupt { .. } => "corrupt",
            UpstreamError::Protocol { .. } => "protocol",
        }
    }
}

pub type Result<T> = std::result::Result<T, UpstreamError>;

/// The first message of a distribution error envelope, or a short plain-text body.
pub(crate) async fn error_message(resp: Response) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let text = resp.text().await.ok()?;
    if let Ok(env) = serde_json::from_str::<Envelope>(&text) {
        let e = env.errors.into_iter().next()?;
        return Some(if e.message.is_empty() { e.code } else { format!("{}: {}", e.code, e.message) });
    }
    // Token services answer `{"details": ...}` (Docker Hub) or `{"error": ...}`.
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&text) {
        let said = ["details", "message", "error"].iter().find_map(|k| o.get(*k)?.as_str());
        if let Some(said) = said.filter(|s| !s.is_empty() && s.len() <= 200) {
            return Some(said.to_owned());
        }
    }
    let text = text.trim();
    (!text.is_empty() && text.len() <= 200 && !text.contains('<')).then(|| text.to_owned())
}
