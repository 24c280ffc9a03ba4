//! `ReplicationPolicy` on the real control plane: between two Registries it copies on the run
//! annotation and on its schedule, reporting each run in its status, and on push (the source
//! Registry makes the copies); a policy whose destination does not answer, or refuses the login
//! its docker config Secret holds, is `Stalled`, saying why.

use super::access::Upstream;
use super::*;
use kube::api::{Patch, PatchParams};

fn policies(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("berth.dev", "v1alpha1", "ReplicationPolicy");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// The policy's `status.lastRun` once `ok` holds for it.
async fn last_run_when(
    api: &Api<DynamicObject>,
    name: &str,
    within: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let found = std::sync::Mutex::new(None);
    let done = wait_until(within, || async {
        let run = api.get_opt(name).await.ok().flatten().map(|o| o.data["status"]["lastRun"].clone());
        match run.filter(|r| ok(r)) {
            Some(r) => {
                *found.lock().unwrap() = Some(r);
                true
            }
            None => false,
        }
    })
    .await;
    done.then(|| found.into_inner().unwrap()).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_between_two_registries_copies_on_request_and_on_schedule() {
    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "repl").await.unwrap();
    let edge = REGISTRY.replace("name: hub", "name: edge");
    for yaml in [REGISTRY, edge.as_str()] {
        let out = kubectl_apply(&cp, &ns.name, yaml);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let regs = registries(&client, &ns.name);
    for name in ["hub", "edge"] {
        assert!(
            wait_condition(&regs, name, "Ready", "True", Duration::from_secs(180)).await,
            "{name} Ready\n{}",
            debug(&cp)
        );
    }
    let (hub, edge) = (
        format!("hub.{}.svc.cluster.local:5000", ns.name),
        format!("edge.{}.svc.cluster.local:5000", ns.name),
    );
    let image = layout();
    let plain = ["--dest-tls-verify=false"];
    let push = skopeo_push(&cp, image.path(), &format!("docker://{hub}/team/app:v1"), &plain);
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));

    let policy = "apiVersion: berth.dev/v1alpha1
kind: ReplicationPolicy
metadata:
  name: to-edge
spec:
  source: {registryRef: {name: hub}}
  destination: {registryRef: {name: edge}}
  rules: [{repositories: [\"team/**\"]}]
  trigger: {manual: true}
";
    let out = kubectl_apply(&cp, &ns.name, policy);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let api = policies(&client, &ns.name);
    assert!(
        wait_condition(&api, "to-edge", "Ready", "True", Duration::from_secs(60)).await,
        "policy Ready\n{}",
        debug(&cp)
    );

    // The run annotation starts one run; its result is the status's last run.
    let annotate = cp
        .kubectl()
        .unwrap()
        .args(["annotate", "-n", &ns.name, "replicationpolicy", "to-edge", "berth.dev/run=1"])
        .output()
        .unwrap();
    assert!(annotate.status.success(), "{}", String::from_utf8_lossy(&annotate.stderr));
    let run = last_run_when(&api, "to-edge", Duration::from_secs(180), |r| r["succeeded"] == true).await;
    let run = run.unwrap_or_else(|| panic!("the requested run succeeded\n{}", debug(&cp)));
    assert_eq!((run["imagesCopied"].as_i64(), run["imagesFailed"].as_i64()), (Some(1), Some(0)), "{run}");
    assert!(run["bytesCopied"].as_i64().unwrap_or(0) > 0, "{run}");
    let pulled = skopeo_pull(&cp, &format!("docker://{edge}/team/app:v1"));
    assert!(pulled.status.success(), "the copy pulls from edge: {}", String::from_utf8_lossy(&pulled.stderr));
    let first_job = run["job"].as_str().unwrap().to_owned();

    // On a schedule: a tag pushed since arrives with the next minute's run; the one copied
    // before counts as already there.
    let push = skopeo_push(&cp, image.path(), &format!("docker://{hub}/team/app:v2"), &plain);
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let every_minute = serde_json::json!({"spec": {"trigger": {"manual": true, "schedule": "* * * * *"}}});
    api.patch("to-edge", &PatchParams::default(), &Patch::Merge(&every_minute)).await.unwrap();
    let scheduled = last_run_when(&api, "to-edge", Duration::from_secs(200), |r| {
        r["job"].as_str().is_some_and(|j| j != first_job) && r["succeeded"] == true
    })
    .await
    .unwrap_or_else(|| panic!("a scheduled run succeeded\n{}", debug(&cp)));
    assert_eq!(
        (scheduled["imagesCopied"].as_i64(), scheduled["imagesSkipped"].as_i64()),
        (Some(1), Some(1)),
        "{scheduled}"
    );
    let status = api.get("to-edge").await.unwrap().data["status"].clone();
    assert!(status["nextRun"].is_string(), "the next scheduled run is shown: {status}");
    let pulled = skopeo_pull(&cp, &format!("docker://{edge}/team/app:v2"));
    assert!(pulled.status.success(), "{}", String::from_utf8_lossy(&pulled.stderr));

    // On push: the policy is rendered into hub's config (its pod rolls), and hub copies each
    // matching tag pushed from then on, under the destination's prefix.
    let pods: Api<Pod> = ns.api();
    let old_uid = pods.get("hub-0").await.unwrap().metadata.uid;
    let on_push = "apiVersion: berth.dev/v1alpha1
kind: ReplicationPolicy
metadata:
  name: pushes-to-edge
spec:
  source: {registryRef: {name: hub}}
  destination: {registryRef: {name: edge}, prefix: pushed}
  rules: [{repositories: [\"team/**\"], tags: [\"v*\"]}]
  trigger: {onPush: true}
";
    let out = kubectl_apply(&cp, &ns.name, on_push);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        wait_condition(&api, "pushes-to-edge", "Ready", "True", Duration::from_secs(60)).await,
        "on-push policy Ready\n{}",
        debug(&cp)
    );
    let (_, reason, _) = condition(&api.get("pushes-to-edge").await.unwrap(), "Ready").unwrap();
    assert_eq!(reason, "OnPush");
    let rolled = wait_until(Duration::from_secs(180), || {
        let (pods, old) = (pods.clone(), old_uid.clone());
        async move {
            pods.get_opt("hub-0").await.ok().flatten().is_some_and(|p| p.metadata.uid != old && pod_ready(&p))
        }
    })
    .await;
    assert!(rolled, "hub rolled with the policy in its config\n{}", debug(&cp));
    let push = skopeo_push(&cp, image.path(), &format!("docker://{hub}/team/app:v3"), &plain);
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let arrived = wait_until(Duration::from_secs(120), || async {
        skopeo_pull(&cp, &format!("docker://{edge}/pushed/team/app:v3")).status.success()
    })
    .await;
    assert!(arrived, "the tag pushed to hub arrived at edge by itself\n{}", debug(&cp));

    // A destination that does not answer: Stalled, with the reason.
    let unreachable = "apiVersion: berth.dev/v1alpha1
kind: ReplicationPolicy
metadata:
  name: nowhere
spec:
  source: {registryRef: {name: hub}}
  destination: {url: \"http://127.0.0.1:9\"}
  trigger: {schedule: \"0 * * * *\"}
";
    let out = kubectl_apply(&cp, &ns.name, unreachable);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (reason, message) = stalled(&cp, &api, "nowhere", Duration::from_secs(60)).await;
    assert_eq!(reason, "Unreachable", "{message}");
    assert!(message.contains("127.0.0.1:9"), "{message}");
    let crons: Api<k8s_openapi::api::batch::v1::CronJob> = ns.api();
    assert!(
        crons.get_opt("nowhere-replicate").await.unwrap().is_none(),
        "a stalled policy schedules no runs"
    );

    // A destination that wants a login, given as a docker config Secret (as `kubectl create secret
    // docker-registry` writes it): checked with that Secret's entry for its host; Stalled, in the
    // destination's words, once the password in it is wrong.
    let dest = Upstream::start("robot", "right").await;
    let host = dest.url.trim_start_matches("http://").to_owned();
    let login = |password: &str| {
        let rendered = cp
            .kubectl()
            .unwrap()
            .args(["create", "secret", "docker-registry", "dest-login", "--docker-server", &host])
            .args([
                "--docker-username",
                "robot",
                "--docker-password",
                password,
                "--dry-run=client",
                "-o",
                "yaml",
            ])
            .output()
            .unwrap();
        assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
        let out = kubectl_apply(&cp, &ns.name, &String::from_utf8_lossy(&rendered.stdout));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    login("right");
    let to_dest = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: ReplicationPolicy\nmetadata:\n  name: to-dest\nspec:\n  \
         source: {{registryRef: {{name: hub}}}}\n  destination: {{url: \"{}\", credentialsSecret: dest-login}}\n  \
         trigger: {{schedule: \"0 * * * *\"}}\n",
        dest.url
    );
    let out = kubectl_apply(&cp, &ns.name, &to_dest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        wait_condition(&api, "to-dest", "Ready", "True", Duration::from_secs(60)).await,
        "a docker config's login is taken\n{:?}\n{}",
        api.get("to-dest").await.map(|p| p.data["status"].clone()),
        debug(&cp)
    );
    login("wrong");
    let (reason, message) = stalled(&cp, &api, "to-dest", Duration::from_secs(90)).await;
    assert_eq!(reason, "Unreachable", "{message}");
    assert!(message.contains(&dest.url) && message.contains("refused the credentials"), "{message}");
    assert!(!message.contains("wrong"), "the password is never shown: {message}");

    // The API server refuses the policy's CronJob (a quota allows no more): Stalled in its words.
    let quota = resource_quota("no-more-crons", "count/cronjobs.batch", 0);
    assert!(kubectl_apply(&cp, &ns.name, &quota).status.success());
    let fenced = "apiVersion: berth.dev/v1alpha1\nkind: ReplicationPolicy\nmetadata:\n  name: fenced\nspec:\n  \
                  source: {registryRef: {name: hub}}\n  destination: {registryRef: {name: edge}}\n  trigger: {schedule: \"0 * * * *\"}\n";
    assert!(kubectl_apply(&cp, &ns.name, fenced).status.success());
    let (reason, message) = stalled(&cp, &api, "fenced", Duration::from_secs(90)).await;
    assert_eq!(reason, "ChildRejected", "{message}");
    assert!(message.contains("CronJob fenced-replicate") && message.contains("quota"), "{message}");
}
