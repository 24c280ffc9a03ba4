//! The reconcile call sequence against a mocked API server: which requests one pass makes, in
//! which order, and that an unchanged world gets no status write. (The real API server is in the
//! end-to-end tests; this pins the sequence cheaply.)

use std::sync::Arc;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};

use super::reconcile::reconcile;
use crate::controllers::Context;
use crate::crd::registry::{NodeMirrorSpec, TlsMode, TlsSpec};
use crate::crd::Registry;
use crate::metrics::Metrics;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn registry(status: serde_json::Value) -> Registry {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": "hub", "namespace": "team", "uid": "u-1", "generation": 1, "resourceVersion": "7"},
        "spec": {},
        "status": status,
    }))
    .unwrap()
}

fn context(handle_client: kube::Client) -> Arc<Context> {
    let reporter = Reporter { controller: "berth-operator".into(), instance: None };
    Arc::new(Context {
        recorder: Recorder::new(handle_client.clone(), reporter),
        client: handle_client,
        default_image: "ghcr.io/berth-dev/berth:test".into(),
        metrics: Arc::new(Metrics::default()),
        resync: std::time::Duration::from_secs(300),
    })
}

/// The address the mock API server gives the Registry's Service.
const CLUSTER_IP: &str = "10.96.7.7";

/// Why the mock's admission policy refuses an object.
const DENIED: &str = "containers must not run as root";

/// One request as the mock saw it.
struct Seen {
    line: String,
    body: serde_json::Value,
}

/// Answers every request with what an API server would, recording each; a PATCH of `refused`
/// is refused as an admission policy would.
async fn serve(mut handle: Handle, ready: bool, refused: Option<&str>) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut service: Option<serde_json::Value> = None;
    while let Some((req, send)) = handle.next_request().await {
        let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
        let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let echo: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let mut code = 200;
        let answer = match (method.as_str(), path.as_str()) {
            ("PATCH", p) if Some(p) == refused => {
                code = 403;
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                                   "message": format!("admission webhook \"policy.example.com\" denied the request: {DENIED}")})
            }
            ("GET", "/apis/apps/v1/namespaces/team/statefulsets/hub") => serde_json::json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "hub", "namespace": "team", "generation": 1},
                "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": if ready { 1 } else { 0 }, "updatedReplicas": 1},
            }),
            ("GET", "/api/v1/namespaces/team/services/hub") if service.is_some() => {
                service.clone().unwrap_or_default()
            }
            // No Secret exists yet (nor the Service before it is applied): the operator makes
            // each one it needs.
            ("GET", p)
                if p.starts_with("/api/v1/namespaces/team/secrets/")
                    || p == "/api/v1/namespaces/team/services/hub" =>
            {
                code = 404;
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
            }
            ("GET", _) => {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []})
            }
            ("PATCH", p) if p.ends_with("/status") => {
                serde_json::to_value(registry(echo["status"].clone())).unwrap()
            }
            // The Service as sent, with the cluster IP the API server allocates.
            ("PATCH", "/api/v1/namespaces/team/services/hub") => {
                let mut applied = echo.clone();
                applied["spec"]["clusterIP"] = CLUSTER_IP.into();
                service.insert(applied).clone()
            }
            // Server-side apply and events: the object as sent.
            _ => echo.clone(),
        };
        seen.push(Seen { line: format!("{method} {path}"), body: echo });
        send.send_response(
            Response::builder().status(code).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap(),
        );
    }
    seen
}

/// One reconcile pass against the mock; returns every request it made.
async fn one_pass(reg: Registry, ready: bool) -> Vec<Seen> {
    one_pass_refusing(reg, ready, None).await
}

/// [`one_pass`], with a PATCH of `refused` refused.
async fn one_pass_refusing(reg: Registry, ready: bool, refused: Option<&'static str>) -> Vec<Seen> {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, ready, refused));
    let ctx = context(kube::Client::new(service, "default"));
    reconcile(Arc::new(reg), ctx).await.unwrap();
    // The context held the only client: with it gone the mock sees no more requests and returns.
    server.await.unwrap()
}

fn lines(seen: &[Seen]) -> Vec<&str> {
    seen.iter().map(|s| s.line.as_str()).collect()
}

#[tokio::test]
async fn first_pass_applies_children_prunes_observes_and_reports() {
    let seen = one_pass(registry(serde_json::Value::Null), true).await;
    assert_eq!(
        lines(&seen),
        [
            // first, for its cluster IP
            "PATCH /api/v1/namespaces/team/services/hub",
            "GET /apis/berth.dev/v1alpha1/namespaces/team/proxycaches",
            "GET /apis/berth.dev/v1alpha1/namespaces/team/replicationpolicies",
            // the claim size the existing StatefulSet was created with
            "GET /apis/apps/v1/namespaces/team/statefulsets/hub",
            "PATCH /api/v1/namespaces/team/secrets/hub-config",
            "PATCH /api/v1/namespaces/team/services/hub-headless",
            "PATCH /apis/apps/v1/namespaces/team/statefulsets/hub",
            "GET /apis/policy/v1/namespaces/team/poddisruptionbudgets",
            // Secrets are never listed: the operator may not (see the chart's RBAC).
            "GET /api/v1/namespaces/team/services",
            "GET /apis/batch/v1/namespaces/team/cronjobs",
            "GET /apis/apps/v1/namespaces/team/statefulsets/hub",
            "GET /api/v1/namespaces/team/persistentvolumeclaims",
            "PATCH /apis/berth.dev/v1alpha1/namespaces/team/registries/hub/status",
            "POST /apis/events.k8s.io/v1/namespaces/team/events",
        ]
    );
    let written = |suffix: &str| &seen.iter().find(|s| s.line.ends_with(suffix)).unwrap().body;
    let status = &written("/status")["status"];
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True");
    assert_eq!(written("/events")["reason"], "Ready");
}

#[tokio::test]
async fn the_first_certificate_and_the_nodes_mirror_files_hold_the_services_cluster_ip() {
    // Nodes reach a Registry with its own CA by the Service's cluster IP: were the certificate
    // issued before the Service had one, nodes would be sent to an address the pods' certificate
    // lacks until they reload the one issued a pass later.
    let mut reg = registry(serde_json::Value::Null);
    reg.spec.tls = Some(TlsSpec { mode: Some(TlsMode::SelfSigned), ..Default::default() });
    reg.spec.node_mirror = Some(NodeMirrorSpec { enabled: Some(true), ..Default::default() });
    let seen = one_pass(reg, true).await;
    let l = lines(&seen);
    let at = |line: &str| l.iter().position(|x| *x == line).unwrap_or_else(|| panic!("no {line} in {l:?}"));
    assert!(
        at("PATCH /api/v1/namespaces/team/services/hub")
            < at("PATCH /api/v1/namespaces/team/secrets/hub-tls")
    );
    let body = |line: &str| &seen.iter().find(|s| s.line == line).unwrap().body;
    let names = body("PATCH /api/v1/namespaces/team/secrets/hub-tls")["metadata"]["annotations"]
        ["berth.dev/dns-names"]
        .as_str()
        .unwrap();
    assert!(names.split(',').any(|n| n == CLUSTER_IP), "{names}");
    let plan = body("PATCH /api/v1/namespaces/team/configmaps/hub-node-mirror")["data"]["plan.json"]
        .as_str()
        .unwrap();
    assert!(plan.contains(&format!("{CLUSTER_IP}:443")), "{plan}");
}

#[tokio::test]
async fn a_child_the_api_server_refuses_stalls_the_registry_in_its_words() {
    let mut tls = registry(serde_json::Value::Null);
    tls.spec.tls = Some(TlsSpec { mode: Some(TlsMode::SelfSigned), ..Default::default() });
    for (reg, refused, what) in [
        (
            registry(serde_json::Value::Null),
            "/apis/apps/v1/namespaces/team/statefulsets/hub",
            "StatefulSet hub",
        ),
        (registry(serde_json::Value::Null), "/api/v1/namespaces/team/services/hub", "Service hub"),
        (tls, "/api/v1/namespaces/team/secrets/hub-tls", "a Secret of the serving certificate"),
    ] {
        // The pass ends without an error (no retry in a tight loop), and says why in the status.
        let seen = one_pass_refusing(reg, false, Some(refused)).await;
        let l = lines(&seen);
        assert!(
            !l.iter().any(|x| x.starts_with("GET /apis/policy")),
            "nothing pruned after a refusal: {l:?}"
        );
        let status =
            &seen.iter().find(|s| s.line.ends_with("/status")).expect("a status write").body["status"];
        let cond =
            |t: &str| status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == t).unwrap();
        assert_eq!(cond("Stalled")["status"], "True", "{refused}");
        assert_eq!(cond("Stalled")["reason"], "ChildRejected");
        let message = cond("Stalled")["message"].as_str().unwrap();
        assert!(message.contains(what) && message.contains(DENIED), "{refused}: {message}");
        assert_eq!(cond("Ready")["status"], "False");
    }
}

#[tokio::test]
async fn a_gc_run_annotation_creates_its_job_once() {
    let mut reg = registry(serde_json::Value::Null);
    reg.spec.gc = Some(Default::default());
    reg.metadata.annotations =
        Some([(super::gc::RUN_ANNOTATION.to_owned(), "first".to_owned())].into_iter().collect());
    let seen = one_pass(reg.clone(), true).await;
    let job = super::gc::requested_job_name(&reg, "first");
    let l = lines(&seen);
    let at = |line: &str| l.iter().position(|x| *x == line).unwrap_or_else(|| panic!("no {line} in {l:?}"));
    // The CronJob is applied, the Job asked for created, then Jobs and their pods are read.
    assert!(
        at("PATCH /apis/batch/v1/namespaces/team/cronjobs/hub-gc")
            < at("POST /apis/batch/v1/namespaces/team/jobs")
    );
    assert!(at("POST /apis/batch/v1/namespaces/team/jobs") < at("GET /apis/batch/v1/namespaces/team/jobs"));
    assert!(at("GET /apis/batch/v1/namespaces/team/jobs") < at("GET /api/v1/namespaces/team/pods"));
    let created = &seen.iter().find(|s| s.line == "POST /apis/batch/v1/namespaces/team/jobs").unwrap().body;
    assert_eq!(created["metadata"]["name"], job);
    let status = &seen.iter().find(|s| s.line.ends_with("/status")).unwrap().body["status"];
    assert_eq!(status["gc"]["requested"], "first");
    // With the request in the status, the next pass creates nothing.
    reg.status = Some(serde_json::from_value(status.clone()).unwrap());
    let again = one_pass(reg, true).await;
    assert!(lines(&again).iter().all(|l| !l.starts_with("POST /apis/batch")), "{:?}", lines(&again));
}

#[tokio::test]
async fn steady_state_writes_no_status_and_sends_no_event() {
    let first = one_pass(registry(serde_json::Value::Null), true).await;
    let written = first.iter().find(|s| s.line.ends_with("/status")).unwrap().body["status"].clone();
    let second = one_pass(registry(written), true).await;
    let writes: Vec<&str> =
        lines(&second).into_iter().filter(|l| l.ends_with("/status") || l.starts_with("POST")).collect();
    assert!(writes.is_empty(), "an unchanged world is not written back: {writes:?}");
}

#[tokio::test]
async fn losing_readiness_is_reported_once() {
    let first = one_pass(registry(serde_json::Value::Null), true).await;
    let written = first.iter().find(|s| s.line.ends_with("/status")).unwrap().body["status"].clone();
    let second = one_pass(registry(written), false).await;
    let event = second.iter().find(|s| s.line.starts_with("POST")).expect("an Event on the transition");
    assert_eq!(event.body["reason"], "NotReady");
    assert_eq!(event.body["type"], "Warning");
}
