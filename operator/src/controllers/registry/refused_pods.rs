//! Why a Registry's pods do not exist. When the API server refuses a pod its StatefulSet (or the
//! node mirror's DaemonSet) asks for — a quota, an admission policy such as Pod Security — the
//! workload's status only shows fewer pods; the reason is in the `FailedCreate` event its
//! controller records. The operator reads the latest one and puts it in the Registry's `Ready`
//! (or `NodeMirrorReady`) condition, so `kubectl get registry` says why.

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};

use crate::controllers::Context;

/// The reason of the condition it fills.
pub const REASON: &str = "PodsNotCreated";

/// What the controller of workload `kind` `name` last said when a pod could not be created;
/// `None` when it said nothing (or the operator may not read events, as an older chart allowed).
pub async fn why(ctx: &Context, ns: &str, kind: &str, name: &str) -> Result<Option<String>, kube::Error> {
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), ns);
    let fields = format!("involvedObject.kind={kind},involvedObject.name={name},reason=FailedCreate");
    match events.list(&ListParams::default().fields(&fields)).await {
        Ok(list) => Ok(latest(list.items)),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The message of the event seen last.
fn latest(events: Vec<Event>) -> Option<String> {
    let seen = |e: &Event| {
        let last = e.last_timestamp.as_ref().map(|t| t.0);
        last.or(e.event_time.as_ref().map(|t| t.0)).or(e.first_timestamp.as_ref().map(|t| t.0))
    };
    events.into_iter().max_by_key(seen).and_then(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(last: Option<&str>, at: Option<&str>, message: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": message},
            "involvedObject": {"kind": "StatefulSet", "name": "hub"},
            "reason": "FailedCreate",
            "lastTimestamp": last,
            "eventTime": at,
            "message": message,
        }))
        .unwrap()
    }

    #[test]
    fn the_event_seen_last_says_why() {
        let events = vec![
            event(Some("2026-12-06T10:00:00Z"), None, "old: exceeded quota"),
            event(Some("2026-12-06T11:00:00Z"), None, "new: denied by policy"),
            event(None, Some("2026-12-06T10:30:00.000000Z"), "between"),
        ];
        assert_eq!(latest(events).as_deref(), Some("new: denied by policy"));
        assert_eq!(latest(vec![]), None);
    }

    #[test]
    fn the_node_mirrors_refused_pods_are_named_in_its_condition() {
        use super::super::status::{self, MirrorState, Observed};
        let r = super::super::tests::registry(serde_json::json!({"nodeMirror": {"enabled": true}}));
        let eff = super::super::effective::resolve(&r, "img");
        let at = |refused: Option<&str>| {
            let obs = Observed {
                node_mirror: Some(MirrorState::Pods {
                    scheduled: 2,
                    ready: 0,
                    refused: refused.map(Into::into),
                }),
                ..Observed::default()
            };
            let s = status::compute(&r, &eff, &obs, crate::controllers::now());
            let c =
                s.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "NodeMirrorReady").unwrap();
            (c.status, c.reason, c.message)
        };
        let (ok, reason, message) = at(Some("pods \"hub-node-mirror-x\" is forbidden: violates PodSecurity"));
        assert_eq!((ok.as_str(), reason.as_str()), ("False", REASON));
        assert!(message.contains("PodSecurity"), "{message}");
        // Created but not ready: the pods' logs say why.
        assert_eq!(at(None).1, "NodesNotConfigured");
    }
}
