//! `berth-operator`: runs the controllers, with leader election, metrics and health endpoints,
//! and structured logs; stops cleanly on SIGTERM.

use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::get;
use berth_operator::controllers::proxycache;
use berth_operator::controllers::registry::reconcile;
use berth_operator::controllers::replication;
use berth_operator::controllers::Context;
use berth_operator::crd::proxycache::ProxyCache;
use berth_operator::crd::replication::ReplicationPolicy;
use berth_operator::crd::Registry;
use berth_operator::metrics::Metrics;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;

const HELP: &str = "berth-operator: reconciles Berth registries in Kubernetes

Environment:
  BERTH_IMAGE           image for Registries that name none (default ghcr.io/berth-dev/berth:<version>)
  BERTH_METRICS_ADDR    address of /metrics, /healthz and /readyz (default 0.0.0.0:8080)
  BERTH_LEADER_ELECTION true|false (default true); needs POD_NAMESPACE and POD_NAME
  BERTH_RESYNC          how often resources are reconciled with nothing changed (default 5m)
  BERTH_LOG_LEVEL       tracing filter (default info); BERTH_LOG_FORMAT text|json (default json)";

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return Ok(());
    }
    if std::env::args().any(|a| a == "--version") {
        println!("berth-operator {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_new(env("BERTH_LOG_LEVEL", "info"))?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if env("BERTH_LOG_FORMAT", "json") == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::default());
    // `$(POD_IP):8080` binds only the pod's own IP (the chart's `bindPodIP`).
    let addr = berth_core::config::parse_listen(&env("BERTH_METRICS_ADDR", "0.0.0.0:8080"))
        .map_err(|e| anyhow::anyhow!("BERTH_METRICS_ADDR: {e}"))?;
    let served = metrics.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { served.render() }));
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    if env("BERTH_LEADER_ELECTION", "true") == "true" {
        let ns = env("POD_NAMESPACE", "berth-system");
        let id = env("POD_NAME", &format!("berth-operator-{}", std::process::id()));
        berth_operator::leader::lead(client.clone(), &ns, "berth-operator", &id).await;
    }

    let reporter = Reporter { controller: "berth-operator".into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        default_image: env("BERTH_IMAGE", &format!("ghcr.io/berth-dev/berth:{}", env!("CARGO_PKG_VERSION"))),
        metrics,
        resync: berth_core::config::duration::parse(&env("BERTH_RESYNC", "5m"))
            .map_err(|e| anyhow::anyhow!("BERTH_RESYNC: {e}"))?,
    });
    let registries: Api<Registry> = Api::all(client.clone());
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        berth_operator::labels::MANAGED_BY,
        berth_operator::labels::OPERATOR
    ));
    let caches = Controller::new(Api::<ProxyCache>::all(client.clone()), watcher::Config::default());
    let cache_store = caches.store();
    let registry_base = Controller::new(registries.clone(), watcher::Config::default());
    let distributing = registry_base.store();
    // Secrets are not watched: RBAC cannot narrow a list or watch of Secrets by label, so the
    // operator may not list them at all (see the chart's RBAC). What happens to the Secrets it
    // made, or to the ones users name, is picked up by the periodic resync of each resource.
    let registry_controller = registry_base
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), owned.clone())
        .owns(Api::<CronJob>::all(client.clone()), owned.clone())
        // The node mirror's pods becoming ready (their node configured) is reported at once.
        .owns(Api::<DaemonSet>::all(client.clone()), owned.clone())
        // A collection's Job (the CronJob's, or one an annotation asked for) that ends is the
        // Registry's last run.
        .watches(Api::<Job>::all(client.clone()), owned, |job: Job| {
            let ns = job.namespace()?;
            let name = job.labels().get(berth_operator::labels::REGISTRY)?.clone();
            Some(ObjectRef::<Registry>::new(&name).within(&ns))
        })
        // A ProxyCache is rendered into its Registry's config.
        .watches(Api::<ProxyCache>::all(client.clone()), watcher::Config::default(), |pc: ProxyCache| {
            let ns = pc.namespace()?;
            Some(ObjectRef::<Registry>::new(&pc.spec.registry_ref.name).within(&ns))
        })
        // A policy that copies on push is rendered into its source Registry's config.
        .watches(
            Api::<ReplicationPolicy>::all(client.clone()),
            watcher::Config::default(),
            |p: ReplicationPolicy| {
                let ns = p.namespace()?;
                let source = p.spec.source.registry_ref.as_ref()?;
                Some(ObjectRef::<Registry>::new(&source.name).within(&ns))
            },
        )
        // A namespace that appears or changes labels may enter or leave a pull Secrets selection.
        .watches(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
            move |_ns: PartialObjectMeta<Namespace>| {
                distributing
                    .state()
                    .into_iter()
                    .filter(|r| r.spec.pull_secrets.is_some())
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown(tokio::signal::ctrl_c()))
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile");
            }
        });
    let by_registry = cache_store;
    let cache_controller = caches
        // A cache is Ready once its Registry serves it.
        .watches(registries, watcher::Config::default(), move |reg: Registry| {
            let (ns, name) = (reg.namespace(), reg.name_any());
            by_registry
                .state()
                .into_iter()
                .filter(|pc| pc.namespace() == ns && pc.spec.registry_ref.name == name)
                .map(|pc| ObjectRef::from_obj(&*pc))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown(tokio::signal::ctrl_c()))
        .run(proxycache::reconcile::reconcile, proxycache::reconcile::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile");
            }
        });
    let policy_jobs = watcher::Config::default().labels(&format!(
        "{}={}",
        berth_operator::labels::MANAGED_BY,
        berth_operator::labels::OPERATOR
    ));
    let replication_controller =
        Controller::new(Api::<ReplicationPolicy>::all(client.clone()), watcher::Config::default())
            .owns(Api::<CronJob>::all(client.clone()), policy_jobs.clone())
            // A run that ends is the policy's last run.
            .owns(Api::<Job>::all(client.clone()), policy_jobs)
            .graceful_shutdown_on(shutdown(tokio::signal::ctrl_c()))
            .run(replication::reconcile::reconcile, replication::reconcile::error_policy, ctx)
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "reconcile");
                }
            });
    tokio::join!(registry_controller, cache_controller, replication_controller);
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (each controller gets its own).
async fn shutdown(ctrl_c: impl std::future::Future) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
    tracing::info!("shutting down");
}
