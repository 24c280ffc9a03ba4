//! Unit tests of `spec.gc`: the CronJob, the Job an annotation asks for, and the last run.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::desired::Child;
use super::effective;
use super::gc;
use super::status::{self, Observed};
use super::tests::{children, find, inputs, registry};
use crate::controllers::render::auth::GC_ROBOT;
use crate::crd::common::condition;

fn cron_of(c: &[Child]) -> serde_json::Value {
    let Child::CronJob(j) = find(c, "CronJob", "hub-gc") else { unreachable!() };
    serde_json::to_value(j).unwrap()
}

fn time(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
}

#[test]
fn spec_gc_makes_a_cron_job_that_runs_berth_gc_as_the_operators_robot() {
    let mut i = inputs();
    i.tls_secret = Some("hub-tls".into());
    let r = registry(serde_json::json!({
        "gc": {"grace": "30m", "dryRun": true},
        "tls": {"mode": "SelfSigned"},
        "auth": {"htpasswdSecret": "users"},
    }));
    let c = children(&r, &i);
    let cron = cron_of(&c);
    let spec = &cron["spec"];
    assert_eq!(spec["schedule"], gc::DEFAULT_SCHEDULE);
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    assert_eq!(spec["suspend"], false);
    assert_eq!(cron["metadata"]["ownerReferences"][0]["uid"], "u-1");
    let pod = &spec["jobTemplate"]["spec"]["template"];
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], "gc");
    assert!(!labels.contains_key("app.kubernetes.io/instance"), "never selected by the registry's Services");
    let container = &pod["spec"]["containers"][0];
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        args,
        [
            "gc",
            "--url",
            "https://hub.team.svc:443",
            "--grace",
            "30m",
            "--report-file",
            crate::controllers::jobs::TERMINATION_LOG,
            "--dry-run",
            "--ca-file",
            "/etc/berth/ca/ca.crt"
        ]
    );
    assert_eq!(container["terminationMessagePath"], crate::controllers::jobs::TERMINATION_LOG);
    assert_eq!(container["env"][0]["value"], GC_ROBOT);
    assert_eq!(container["env"][1]["valueFrom"]["secretKeyRef"]["name"], "hub-robots");
    assert_eq!(pod["spec"]["volumes"][0]["secret"]["secretName"], "hub-tls");
    assert!(pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["name"] != "data"));
    // berth is told of the robot, granted admin, and mounts its hash.
    let config = super::tests::config_of(&c);
    let robot = config.auth.unwrap().robots.into_iter().find(|r| r.name == GC_ROBOT).unwrap();
    assert_eq!(robot.grants[0].actions, [berth_core::config::auth::Action::Admin]);

    // An open registry: no credentials, plain HTTP; suspend and a schedule of one's own.
    let open = registry(
        serde_json::json!({"gc": {"schedule": "*/5 * * * *", "suspend": true, "keepUntagged": true, "scrub": true}}),
    );
    let cron = cron_of(&children(&open, &inputs()));
    assert_eq!(cron["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(cron["spec"]["suspend"], true);
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][2], "http://hub.team.svc:5000");
    assert!(container["args"].as_array().unwrap().iter().any(|a| a == "--keep-untagged"));
    assert!(container["args"].as_array().unwrap().iter().any(|a| a == "--scrub"));
    assert_eq!(container["env"], serde_json::json!([]));
    // Without spec.gc there is none (and the reconciler prunes one that was there).
    let none = children(&registry(serde_json::json!({})), &inputs());
    assert!(none.iter().all(|c| c.kind() != "CronJob"));
}

#[test]
fn the_annotation_asks_for_one_run_per_value() {
    let eff = |r: &crate::crd::Registry| effective::resolve(r, "berth:1");
    let mut r = registry(serde_json::json!({"gc": {}}));
    assert_eq!(gc::pending_request(&r), None, "no annotation");
    r.metadata.annotations.get_or_insert_default().insert(gc::RUN_ANNOTATION.into(), "2026-12-04".into());
    assert_eq!(gc::pending_request(&r).as_deref(), Some("2026-12-04"));
    let job = gc::requested_job(&r, &eff(&r), None, "2026-12-04").unwrap().unwrap();
    let name = job.metadata.name.clone().unwrap();
    assert_eq!(name, gc::requested_job_name(&r, "2026-12-04"), "the same value names the same Job");
    assert!(name.starts_with("hub-gc-") && name.len() == "hub-gc-".len() + 8, "{name}");
    assert_ne!(name, gc::requested_job_name(&r, "2026-12-05"));
    assert!(job.spec.unwrap().ttl_seconds_after_finished.is_some());
    // Acted on: the status says so, and nothing more is asked.
    r.status = Some(crate::crd::registry::RegistryStatus {
        gc: Some(crate::crd::registry::GcStatus {
            requested: Some("2026-12-04".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(gc::pending_request(&r), None);
    let mut without = registry(serde_json::json!({}));
    without.metadata.annotations = r.metadata.annotations.clone();
    assert_eq!(gc::pending_request(&without), None, "no spec.gc, no run");
}

fn job(name: &str, ok: bool, ended: i64) -> Job {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "status": {
            "startTime": time(ended - 5),
            "completionTime": if ok { Some(time(ended)) } else { None },
            "conditions": [{"type": if ok { "Complete" } else { "Failed" }, "status": "True",
                "lastTransitionTime": time(ended), "message": "Job has reached the specified backoff limit"}],
        },
    }))
    .unwrap()
}

fn pod(job: &str, message: &str, ended: i64) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{job}-x"), "labels": {"batch.kubernetes.io/job-name": job}},
        "status": {"containerStatuses": [{"name": "gc", "image": "berth", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 0, "finishedAt": time(ended), "message": message}}}]},
    }))
    .unwrap()
}

#[test]
fn the_last_run_is_the_job_that_ended_last_with_what_its_pod_said() {
    let summary = r#"{"dryRun":false,"manifestsRemoved":2,"linksRemoved":10,"blobsRemoved":9,"bytesFreed":4096,"conflicts":1,"orphansRemoved":3,"corruptBlobs":1}"#;
    let jobs = [job("hub-gc-1", true, 100), job("hub-gc-2", false, 300), job("hub-gc-3", true, 200)];
    let pods = [
        pod("hub-gc-1", "{}", 100),
        pod("hub-gc-3", summary, 200),
        pod("hub-gc-2", r#"{"error":"POST …: 503: the database is unreachable"}"#, 300),
    ];
    let failed = gc::last_run(&jobs, &pods).unwrap();
    assert_eq!((failed.job.as_str(), failed.result.as_str()), ("hub-gc-2", "Failed"));
    assert_eq!(failed.message.as_deref(), Some("POST …: 503: the database is unreachable"));
    let ok = gc::last_run(&jobs[..1].iter().chain(&jobs[2..]).cloned().collect::<Vec<_>>(), &pods).unwrap();
    assert_eq!((ok.job.as_str(), ok.result.as_str()), ("hub-gc-3", "Succeeded"));
    assert_eq!((ok.manifests_removed, ok.blobs_removed, ok.bytes_reclaimed), (Some(2), Some(9), Some(4096)));
    assert_eq!((ok.dry_run, ok.conflicts, ok.message), (Some(false), Some(1), None));
    assert_eq!((ok.orphans_removed, ok.corrupt_blobs), (Some(3), Some(1)));
    // A pod whose message is not a summary (a log tail): the Job's reason stands in.
    let no_summary = gc::last_run(&jobs[1..2], &[]).unwrap();
    assert_eq!(no_summary.message.as_deref(), Some("Job has reached the specified backoff limit"));
    let running: Job = serde_json::from_value(serde_json::json!({"metadata": {"name": "hub-gc-4"}})).unwrap();
    assert_eq!(gc::last_run(&[running], &[]), None, "a run still going has not ended");
}

#[test]
fn status_reports_the_last_run_and_keeps_it_when_its_job_is_gone() {
    let r = registry(serde_json::json!({"gc": {}}));
    let eff = effective::resolve(&r, "berth:1");
    let s = status::compute(&r, &eff, &Observed::default(), time(1));
    let c = condition(s.conditions.as_deref().unwrap(), "GarbageCollected").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "NotRunYet"));
    assert_eq!(s.gc.as_ref().unwrap().cron_job.as_deref(), Some("hub-gc"));

    let summary = r#"{"dryRun":false,"manifestsRemoved":2,"blobsRemoved":9,"bytesFreed":4096}"#;
    let obs = Observed {
        gc_requested: Some("now".into()),
        gc_last_run: gc::last_run(&[job("hub-gc-1", true, 100)], &[pod("hub-gc-1", summary, 100)]),
        ..Observed::default()
    };
    let s = status::compute(&r, &eff, &obs, time(2));
    let c = condition(s.conditions.as_deref().unwrap(), "GarbageCollected").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Collected"));
    assert_eq!(c.message, "Job hub-gc-1 removed 2 manifests and 9 blobs, 4096 bytes");
    // The next pass sees no Job (removed after its time): the report stands, unchanged.
    let mut later = r.clone();
    later.status = Some(s.clone());
    let again = status::compute(&later, &eff, &Observed::default(), time(3));
    assert_eq!(again, s, "an unchanged world, an unchanged status");
    // A verifying run that found corrupt blobs: the condition says so.
    let corrupt = r#"{"dryRun":false,"manifestsRemoved":0,"blobsRemoved":0,"bytesFreed":0,"corruptBlobs":2}"#;
    let obs = Observed {
        gc_last_run: gc::last_run(&[job("hub-gc-2", true, 400)], &[pod("hub-gc-2", corrupt, 400)]),
        ..Observed::default()
    };
    let s = status::compute(&r, &eff, &obs, time(4));
    let c = condition(s.conditions.as_deref().unwrap(), "GarbageCollected").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "CorruptBlobs"));
    assert!(c.message.contains("found 2 stored blobs"), "{}", c.message);
    // Without spec.gc: no condition, no gc status.
    let plain = registry(serde_json::json!({}));
    let s = status::compute(&plain, &eff, &Observed::default(), time(1));
    assert!(s.gc.is_none() && condition(s.conditions.as_deref().unwrap(), "GarbageCollected").is_none());
}
