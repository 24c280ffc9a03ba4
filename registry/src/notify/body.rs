//! What an endpoint receives: a CloudEvents 1.0 event in structured mode, or the envelope of
//! CNCF Distribution's notifications; and the signature over it.
//!
//! The signature header is `Berth-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the HMAC
//! keyed by the endpoint's secret over `<t>.<body>`: a receiver recomputes it, compares in
//! constant time, and refuses an old `t` to stop replays.

use berth_core::config::notifications::{EventKind, Format};
use serde_json::{json, Value};

use crate::meta::events::Event;

pub const SIGNATURE_HEADER: &str = "berth-signature";
pub const CLOUDEVENTS_TYPE: &str = "application/cloudevents+json";
pub const DISTRIBUTION_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// The body and its content type for `format`; `None` when the format has no such event
/// (Distribution's envelope knows no referrers: their pushes are pushes already).
pub fn render(format: Format, e: &Event, source: &str) -> Option<(&'static str, Vec<u8>)> {
    let value = match format {
        Format::Cloudevents => cloudevent(e, source),
        Format::Distribution => distribution(e, source)?,
    };
    let content_type = match format {
        Format::Cloudevents => CLOUDEVENTS_TYPE,
        Format::Distribution => DISTRIBUTION_TYPE,
    };
    Some((content_type, value.to_string().into_bytes()))
}

fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

fn cloudevent(e: &Event, source: &str) -> Value {
    let subject = match (&e.digest, &e.tag) {
        (Some(d), _) => format!("{}@{d}", e.repository),
        (None, Some(t)) => format!("{}:{t}", e.repository),
        (None, None) => e.repository.clone(),
    };
    let mut data = json!({
        "repository": e.repository,
        "actor": e.actor,
        "address": e.address,
        "requestId": e.request_id,
    });
    for (key, value) in [
        ("digest", e.digest.as_ref().map(|v| json!(v))),
        ("tag", e.tag.as_ref().map(|v| json!(v))),
        ("mediaType", e.media_type.as_ref().map(|v| json!(v))),
        ("artifactType", e.artifact_type.as_ref().map(|v| json!(v))),
        ("size", e.size.map(|v| json!(v))),
        ("subject", e.subject.as_ref().map(|v| json!(v))),
    ] {
        if let Some(v) = value {
            data[key] = v;
        }
    }
    if e.kind == EventKind::Pull {
        // Alike pulls within one interval are one event.
        data["count"] = json!(e.count);
    }
    json!({
        "specversion": "1.0",
        "id": e.id,
        "source": source,
        "type": e.kind.cloud_type(),
        "subject": subject,
        "time": time(e.at),
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn distribution(e: &Event, source: &str) -> Option<Value> {
    let action = match e.kind {
        EventKind::Push => "push",
        EventKind::Delete | EventKind::TagDelete => "delete",
        EventKind::Pull => "pull",
        EventKind::Referrer | EventKind::Denied | EventKind::LoginFailed | EventKind::Admin => return None,
    };
    let mut target = json!({ "repository": e.repository });
    if let Some(d) = &e.digest {
        target["digest"] = json!(d);
    }
    if let Some(t) = &e.tag {
        target["tag"] = json!(t);
    }
    if let Some(m) = &e.media_type {
        target["mediaType"] = json!(m);
    }
    if let Some(s) = e.size {
        target["size"] = json!(s);
        target["length"] = json!(s);
    }
    if let (Some(d), EventKind::Push | EventKind::Pull) = (&e.digest, e.kind) {
        target["url"] = json!(format!("{source}/v2/{}/manifests/{d}", e.repository));
    }
    let mut event = json!({
        "id": e.id,
        "timestamp": time(e.at),
        "action": action,
        "target": target,
        "request": { "id": e.request_id, "addr": e.address },
        "actor": { "name": e.actor },
        "source": { "addr": source },
    });
    if e.kind == EventKind::Pull {
        // Not in registry:2's envelope (one event per pull); its readers ignore it.
        event["count"] = json!(e.count);
    }
    Some(json!({ "events": [event] }))
}

/// The `Berth-Signature` value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            seq: 1,
            id: "7f1c".into(),
            at: 1_764_000_000_123,
            kind,
            repository: "team/app".into(),
            digest: Some("sha256:ab".into()),
            tag: Some("v1".into()),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            artifact_type: None,
            size: Some(42),
            subject: None,
            actor: "ci".into(),
            address: "10.0.0.1".into(),
            request_id: "req-1".into(),
            count: 1,
            detail: None,
        }
    }

    #[test]
    fn cloudevents_carry_the_required_attributes() {
        let (ct, body) = render(Format::Cloudevents, &event(EventKind::Push), "https://reg").unwrap();
        assert_eq!(ct, CLOUDEVENTS_TYPE);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "7f1c");
        assert_eq!(v["type"], "dev.berth.manifest.pushed");
        assert_eq!(v["subject"], "team/app@sha256:ab");
        assert_eq!(v["time"], "2025-11-24T16:00:00.123Z");
        assert_eq!(v["data"]["tag"], "v1");
        assert_eq!(v["data"]["size"], 42);
        assert!(v["data"].get("artifactType").is_none(), "absent, not null");
    }

    #[test]
    fn the_distribution_envelope_reads_as_registry_2_s() {
        let (_, body) = render(Format::Distribution, &event(EventKind::TagDelete), "https://reg").unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let e = &v["events"][0];
        assert_eq!(e["action"], "delete");
        assert_eq!(e["target"]["repository"], "team/app");
        assert_eq!(e["target"]["tag"], "v1");
        assert_eq!(e["actor"]["name"], "ci");
        assert!(render(Format::Distribution, &event(EventKind::Referrer), "x").is_none());
    }

    #[test]
    fn a_pull_says_how_many_it_stands_for() {
        let pulls = Event { count: 3, ..event(EventKind::Pull) };
        let (_, body) = render(Format::Cloudevents, &pulls, "https://reg").unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["data"]["count"].as_u64()),
            (Some("dev.berth.manifest.pulled"), Some(3))
        );
        let (_, body) = render(Format::Distribution, &pulls, "https://reg").unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let e = &v["events"][0];
        assert_eq!((e["action"].as_str(), e["count"].as_u64()), (Some("pull"), Some(3)));
        assert_eq!(e["target"]["url"], "https://reg/v2/team/app/manifests/sha256:ab");
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_time_and_body() {
        // As Python's `hmac.new(b"Jefe", b"0.what do ya want for nothing?", sha256)` has it.
        let s = signature(b"Jefe", 0, b"what do ya want for nothing?");
        assert_eq!(s, "t=0,v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc");
        assert_ne!(s, signature(b"Jefe", 1, b"what do ya want for nothing?"), "the time is signed");
        assert_ne!(s, signature(b"jefe", 0, b"what do ya want for nothing?"), "the key matters");
    }
}
