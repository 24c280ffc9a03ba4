use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::render::{self, Side};
use super::status;
use crate::crd::proxycache::LocalRef;
use crate::crd::replication::{
    DeleteMode, Endpoint, ReplicationPolicy, ReplicationPolicySpec, ReplicationRule, Trigger,
};
use crate::crd::Registry;

fn policy(rules: Vec<ReplicationRule>) -> ReplicationPolicy {
    let mut p = ReplicationPolicy::new(
        "edge",
        ReplicationPolicySpec {
            source: Endpoint { registry_ref: Some(LocalRef { name: "hub".into() }), ..Default::default() },
            destination: Endpoint {
                url: Some("https://edge.example".into()),
                credentials_secret: Some("edge-login".into()),
                ..Default::default()
            },
            rules: Some(rules),
            trigger: Some(Trigger {
                schedule: Some("*/5 * * * *".into()),
                manual: Some(true),
                on_push: None,
            }),
            deletes: Some(DeleteMode::Tags),
            ..Default::default()
        },
    );
    p.metadata.namespace = Some("ci".into());
    p.metadata.uid = Some("u".into());
    p
}

fn sides() -> (Side, Side) {
    let mut hub = Registry::new("hub", Default::default());
    hub.metadata.namespace = Some("ci".into());
    let p = policy(vec![]);
    let from = render::side(&p.spec.source, "source", Some(&hub), true).unwrap();
    let to = render::side(&p.spec.destination, "destination", None, true).unwrap();
    (from, to)
}

#[test]
fn each_rule_is_a_container_in_order() {
    let p = policy(vec![
        ReplicationRule {
            repositories: Some(vec!["team/**".into()]),
            tags: Some(vec!["v*".into(), "re:^rc-[0-9]+$".into()]),
            referrers: None,
        },
        ReplicationRule {
            repositories: Some(vec!["base/*".into()]),
            referrers: Some(false),
            ..Default::default()
        },
    ]);
    let (from, to) = sides();
    assert_eq!(from.url, "http://hub.ci.svc:5000");
    let cron = render::cron_job(&p, "berth:1", &from, &to).unwrap().unwrap();
    let spec = cron.spec;
    assert_eq!(spec.schedule, "*/5 * * * *");
    let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
    let init = pod.init_containers.unwrap();
    assert_eq!(init.len(), 1);
    assert_eq!(pod.containers.len(), 1);
    let args = init[0].args.clone().unwrap().join(" ");
    assert!(
        args.starts_with("replicate --from http://hub.ci.svc:5000 --to https://edge.example --delete tags"),
        "{args}"
    );
    assert!(args.contains("--all --repository team/** --tag v* --tag-regex ^rc-[0-9]+$"), "{args}");
    assert!(!args.contains("--no-referrers"), "{args}");
    let last = pod.containers[0].args.clone().unwrap().join(" ");
    assert!(last.contains("--all --no-referrers --repository base/*"), "{last}");
    let env: Vec<_> = pod.containers[0].env.clone().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(env, ["BERTH_TO_USERNAME", "BERTH_TO_PASSWORD"], "only the URL end has credentials");
}

#[test]
fn a_docker_config_secret_is_mounted_and_named_as_the_authfile() {
    let p = policy(vec![]);
    let (from, to) = sides();
    let to = Side { docker_config: true, ..to };
    let cron = render::cron_job(&p, "berth:1", &from, &to).unwrap().unwrap();
    let pod = cron.spec.job_template.spec.unwrap().template.spec.unwrap();
    let args = pod.containers[0].args.clone().unwrap().join(" ");
    assert!(args.contains("--to-authfile /etc/berth/to-auth/config.json"), "{args}");
    assert!(pod.containers[0].env.clone().unwrap_or_default().is_empty(), "no username to read");
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "to-auth").unwrap();
    let secret = volume.secret.unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("edge-login"));
    assert_eq!(secret.items.unwrap()[0].key, ".dockerconfigjson");
}

#[test]
fn prefixes_rename_repositories_between_the_ends() {
    let mut p = policy(vec![]);
    p.spec.source.prefix = Some("team".into());
    p.spec.destination.prefix = Some("mirror/".into());
    let (from, to) = sides();
    let cron = render::cron_job(&p, "berth:1", &from, &to).unwrap().unwrap();
    let pod = cron.spec.job_template.spec.unwrap().template.spec.unwrap();
    let args = pod.containers[0].args.clone().unwrap().join(" ");
    assert!(args.contains("--from-prefix team --to-prefix mirror/"), "{args}");
}

#[test]
fn ends_that_cannot_be_used_say_why() {
    let p = policy(vec![]);
    let missing = render::side(&p.spec.source, "source", None, true).unwrap_err();
    assert!(missing.contains("Registry hub does not exist"), "{missing}");
    let mut guarded = Registry::new("hub", Default::default());
    guarded.spec.auth = Some(Default::default());
    let login = render::side(&p.spec.source, "source", Some(&guarded), true).unwrap_err();
    assert!(login.contains("credentialsSecret") && login.contains("pull"), "{login}");
    assert!(
        render::side(&p.spec.source, "source", Some(&guarded), false).is_ok(),
        "a source whose copies are its own, on push, needs no login to itself"
    );
    let prefixed =
        Endpoint { url: Some("http://x".into()), prefix: Some("Mirror/".into()), ..Default::default() };
    assert!(render::side(&prefixed, "destination", None, true).unwrap_err().contains("prefix"));
    let bad = ReplicationRule { tags: Some(vec!["re:(".into()]), ..Default::default() };
    let (from, to) = sides();
    assert_eq!(render::cron_job(&policy(vec![bad]), "b", &from, &to).unwrap_err().reason(), "InvalidSpec");
}

#[test]
fn a_run_is_asked_for_once_per_annotation_value() {
    let mut p = policy(vec![]);
    assert_eq!(render::pending_request(&p), None);
    p.metadata.annotations = Some([(render::RUN_ANNOTATION.to_owned(), "1".to_owned())].into());
    assert_eq!(render::pending_request(&p).as_deref(), Some("1"));
    assert_eq!(render::requested_job_name(&p, "1"), render::requested_job_name(&p, "1"));
    p.status = Some(crate::crd::replication::ReplicationPolicyStatus {
        requested: Some("1".into()),
        ..Default::default()
    });
    assert_eq!(render::pending_request(&p), None, "acted on");
}

fn ended_job(name: &str, ok: bool, at: &str) -> Job {
    Job {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        status: Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: if ok { "Complete" } else { "Failed" }.into(),
                status: "True".into(),
                last_transition_time: Some(Time(at.parse().unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_of(job: &str, said: &[(&str, &str)]) -> Pod {
    let status = |(name, message): &(&str, &str)| ContainerStatus {
        name: (*name).into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                message: Some((*message).into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (init, last) = said.split_at(said.len() - 1);
    Pod {
        metadata: ObjectMeta {
            labels: Some([("batch.kubernetes.io/job-name".to_owned(), job.to_owned())].into()),
            ..Default::default()
        },
        status: Some(PodStatus {
            init_container_statuses: Some(init.iter().map(status).collect()),
            container_statuses: Some(last.iter().map(status).collect()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn the_last_run_adds_up_its_rules() {
    let p = policy(vec![Default::default(), Default::default()]);
    let jobs =
        vec![ended_job("old", true, "2026-12-01T00:00:00Z"), ended_job("new", true, "2026-12-02T00:00:00Z")];
    let pods = vec![pod_of(
        "new",
        &[
            ("rule-0", r#"{"imagesCopied": 2, "imagesUnchanged": 1, "imagesFailed": 0, "bytesCopied": 100}"#),
            ("rule-1", r#"{"imagesCopied": 3, "imagesUnchanged": 0, "imagesFailed": 0, "bytesCopied": 50}"#),
        ],
    )];
    let run = status::last_run(&p, &jobs, &pods).unwrap();
    assert_eq!(run.job.as_deref(), Some("new"));
    assert_eq!((run.images_copied, run.images_skipped, run.bytes_copied), (Some(5), Some(1), Some(150)));
    assert_eq!((run.succeeded, run.message), (Some(true), None));
    let failed = vec![pod_of(
        "bad",
        &[("rule-0", r#"{"imagesFailed": 1, "error": "team/app:v1: refused"}"#), ("rule-1", "")],
    )];
    let run = status::last_run(&p, &[ended_job("bad", false, "2026-12-03T00:00:00Z")], &failed).unwrap();
    assert_eq!((run.succeeded, run.message.as_deref()), (Some(false), Some("team/app:v1: refused")));
}

#[test]
fn status_is_stalled_with_the_reason_and_has_no_next_run() {
    let p = policy(vec![]);
    let now = Time("2026-12-04T13:29:30Z".parse().unwrap());
    let ok = status::compute(&p, &status::Observed::default(), now.clone());
    assert_eq!(ok.next_run, Some(Time("2026-12-04T13:30:00Z".parse().unwrap())));
    let ready = ok.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Scheduled"));
    let obs = status::Observed {
        stalled: Some(("Unreachable".into(), "destination: refused".into())),
        ..Default::default()
    };
    let stalled = status::compute(&p, &obs, now);
    assert_eq!(stalled.next_run, None);
    let c = stalled.conditions.unwrap();
    assert!(c.iter().any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "Unreachable"));
    assert!(c.iter().any(|c| c.type_ == "Ready" && c.status == "False"));
}
