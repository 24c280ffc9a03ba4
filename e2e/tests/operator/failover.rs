//! Two operator replicas: one leader, and a new one when it goes.

use super::*;

/// `berth_operator_reconciles_total` of one operator pod, read from its own metrics endpoint.
async fn pod_reconciles(pod: &Pod) -> Option<u64> {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone())?;
    let text = reqwest::get(format!("http://{ip}:8080/metrics")).await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("berth_operator_reconciles_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operator_replicas_elect_one_leader_and_fail_over() {
    let cp = cluster().await;
    install_operator_with(&cp, &["replicaCount=2"]);
    let client = cp.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "berth-system");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "berth-system");
    let holder = || async {
        leases.get_opt("berth-operator").await.ok().flatten().and_then(|l| l.spec?.holder_identity)
    };
    assert!(
        wait_until(Duration::from_secs(60), || async { holder().await.is_some() }).await,
        "a leader is elected"
    );
    let leader = holder().await.unwrap();

    let ns = TempNamespace::create(&client, "ha").await.unwrap();
    let regs = registries(&client, &ns.name);
    assert!(kubectl_apply(&cp, &ns.name, REGISTRY).status.success());
    assert!(
        wait_condition(&regs, "hub", "Ready", "True", Duration::from_secs(180)).await,
        "Ready\n{}",
        debug(&cp)
    );
    // Only the leader reconciles.
    let operators =
        pods.list(&ListParams::default().labels("app.kubernetes.io/name=berth-operator")).await.unwrap();
    assert_eq!(operators.items.len(), 2, "two replicas run");
    for p in &operators.items {
        let n = pod_reconciles(p).await;
        if p.metadata.name.as_deref() == Some(leader.as_str()) {
            assert!(n.is_some_and(|n| n > 0), "the leader reconciles: {n:?}");
        } else {
            let name = p.metadata.name.clone().unwrap_or_default();
            assert_eq!(n, Some(0), "the follower {name} answers and stays idle");
        }
    }

    // The leader goes away: another replica takes the Lease and carries on.
    pods.delete(&leader, &DeleteParams::default()).await.unwrap();
    let took_over =
        wait_until(Duration::from_secs(90), || async { holder().await.is_some_and(|h| h != leader) }).await;
    assert!(took_over, "another replica holds the Lease\n{}", debug(&cp));
    let second = REGISTRY.replace("name: hub", "name: second");
    assert!(kubectl_apply(&cp, &ns.name, &second).status.success());
    assert!(
        wait_condition(&regs, "second", "Ready", "True", Duration::from_secs(180)).await,
        "the new leader reconciles\n{}",
        debug(&cp)
    );
}
