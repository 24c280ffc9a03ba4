//! `spec.notifications` as berth's `notifications` config (pure), and the Secrets it mounts:
//!
//! ```text
//! endpoint's secret (a Secret key) ─► /etc/berth/webhooks/<endpoint>/secret
//! endpoint's caSecret              ─► /etc/berth/webhooks/<endpoint>-ca/ca.crt
//! ```
//! The endpoint's name is checked by berth's own validation, so it is a safe path part.

use berth_core::config::duration;
use berth_core::config::notifications::{Endpoint, EventKind, Format, NotificationsConfig};

use super::error::BuildError;
use crate::crd::registry::{NotificationsSpec, WebhookEvent, WebhookFormat};

const DIR: &str = "/etc/berth/webhooks";

pub fn config(spec: &NotificationsSpec) -> Result<NotificationsConfig, BuildError> {
    let invalid = |m: String| BuildError::InvalidNotifications(m);
    let parse = |v: &Option<String>, field: String| {
        v.as_deref().map(duration::parse).transpose().map_err(|m| invalid(format!("{field}: {m}")))
    };
    let mut endpoints = Vec::new();
    for (i, w) in spec.endpoints.iter().flatten().enumerate() {
        let mut e = Endpoint {
            name: w.name.clone(),
            url: w.url.clone(),
            secret_file: w.secret.as_ref().map(|_| format!("{DIR}/{}/secret", w.name).into()),
            format: match w.format {
                Some(WebhookFormat::Distribution) => Format::Distribution,
                _ => Format::Cloudevents,
            },
            events: w
                .events
                .iter()
                .flatten()
                .map(|k| match k {
                    WebhookEvent::Push => EventKind::Push,
                    WebhookEvent::TagDelete => EventKind::TagDelete,
                    WebhookEvent::Delete => EventKind::Delete,
                    WebhookEvent::Referrer => EventKind::Referrer,
                    WebhookEvent::Pull => EventKind::Pull,
                })
                .collect(),
            repositories: w.repositories.clone().unwrap_or_default(),
            ca_file: w.ca_secret.as_ref().map(|_| format!("{DIR}/{}-ca/ca.crt", w.name).into()),
            ..default_endpoint()
        };
        if let Some(t) = parse(&w.timeout, format!("endpoints[{i}].timeout"))? {
            e.timeout = t;
        }
        if let Some(b) = parse(&w.backoff, format!("endpoints[{i}].backoff"))? {
            e.backoff = b;
        }
        if let Some(n) = w.max_attempts {
            e.max_attempts = n;
        }
        endpoints.push(e);
    }
    let config = NotificationsConfig { endpoints, keep: parse(&spec.keep, "keep".into())?, source: None };
    config.validate().map_err(|(field, m)| {
        invalid(format!("{}: {m}", field.strip_prefix("notifications.").unwrap_or(&field)))
    })?;
    Ok(config)
}

/// An endpoint with berth's defaults (from berth's own parser, so the two cannot drift).
fn default_endpoint() -> Endpoint {
    let yaml = "notifications:\n  endpoints:\n    - {name: d, url: 'http://d'}\n";
    berth_core::config::Config::from_yaml(yaml, "defaults")
        .ok()
        .and_then(|c| c.notifications.endpoints.into_iter().next())
        .unwrap_or(Endpoint {
            name: String::new(),
            url: String::new(),
            secret_file: None,
            format: Format::Cloudevents,
            events: vec![],
            repositories: vec![],
            timeout: std::time::Duration::from_secs(10),
            max_attempts: 10,
            backoff: std::time::Duration::from_secs(1),
            ca_file: None,
        })
}

/// Volume mounts and volumes for every endpoint's signing and CA Secrets.
pub fn volumes(spec: &NotificationsSpec) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let (mut mounts, mut volumes) = (vec![], vec![]);
    for (i, w) in spec.endpoints.iter().flatten().enumerate() {
        if let Some(s) = &w.secret {
            let name = format!("webhook-{i}");
            mounts.push(
                serde_json::json!({"name": name, "mountPath": format!("{DIR}/{}", w.name), "readOnly": true}),
            );
            volumes.push(serde_json::json!({"name": name, "secret": {
                "secretName": s.name, "defaultMode": 0o440, "items": [{"key": s.key, "path": "secret"}],
            }}));
        }
        if let Some(ca) = &w.ca_secret {
            let name = format!("webhook-{i}-ca");
            mounts.push(serde_json::json!({"name": name, "mountPath": format!("{DIR}/{}-ca", w.name), "readOnly": true}));
            volumes
                .push(serde_json::json!({"name": name, "secret": {"secretName": ca, "defaultMode": 0o440}}));
        }
    }
    (mounts, volumes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::common::SecretKeyRef;
    use crate::crd::registry::WebhookSpec;

    fn spec(w: WebhookSpec) -> NotificationsSpec {
        NotificationsSpec { keep: Some("72h".into()), endpoints: Some(vec![w]) }
    }

    #[test]
    fn endpoints_render_with_their_secrets_mounted() {
        let s = spec(WebhookSpec {
            name: "scanner".into(),
            url: "https://scanner.example/hook".into(),
            secret: Some(SecretKeyRef { name: "hooks".into(), key: "scanner".into() }),
            format: Some(WebhookFormat::Distribution),
            events: Some(vec![WebhookEvent::Push]),
            backoff: Some("5s".into()),
            ..Default::default()
        });
        let c = config(&s).unwrap();
        let e = &c.endpoints[0];
        assert_eq!(e.format, Format::Distribution);
        assert_eq!(e.events, [EventKind::Push]);
        assert_eq!((e.backoff.as_secs(), e.timeout.as_secs(), e.max_attempts), (5, 10, 10));
        assert_eq!(c.keep.map(|k| k.as_secs()), Some(72 * 3600));
        let (mounts, vols) = volumes(&s);
        let path = std::path::Path::new(mounts[0]["mountPath"].as_str().unwrap()).join("secret");
        assert_eq!(e.secret_file.as_deref(), Some(path.as_path()), "the config names the mounted file");
        assert_eq!(vols[0]["secret"]["items"][0]["key"], "scanner");
    }

    #[test]
    fn a_bad_endpoint_is_refused_with_its_field() {
        let bad = spec(WebhookSpec { name: "a/b".into(), url: "http://x".into(), ..Default::default() });
        let e = config(&bad).unwrap_err();
        assert_eq!(e.reason(), "InvalidNotifications");
        assert!(e.to_string().contains("endpoints[0].name"), "{e}");
        let slow = spec(WebhookSpec {
            name: "a".into(),
            url: "http://x".into(),
            timeout: Some("soon".into()),
            ..Default::default()
        });
        assert!(config(&slow).unwrap_err().to_string().contains("endpoints[0].timeout"));
    }
}
