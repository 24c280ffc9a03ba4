//! `berth-operator`: runs the controllers, with leader election, metrics and health endpoints,
//! and structured logs; stops cleanly on SIGTERM.

use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::get;
use berth_operator::controllers::registry::reconcile::{self, Context};
use berth_operator::crd::proxycache::ProxyCache;
use berth_operator::crd::Registry;
use berth_operator::metrics::Metrics;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;

const HELP: &str = "berth-operator: reconciles Berth registries in Kubernetes

Environment:
  BERTH_IMAGE           image for Registries that name none (default ghcr.io/berth-dev/berth:<version>)
  BERTH_METRICS_ADDR    address of /metrics, /healthz and /readyz (default 0.0.0.0:8080)
  BERTH_LEADER_ELECTION true|false (default true); needs POD_NAMESPACE and POD_NAME
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
    let mut addr: std::net::SocketAddr = env("BERTH_METRICS_ADDR", "0.0.0.0:8080").parse()?;
    // Where pods share one network (Berth's e2e kubelet), a wildcard address is narrowed to ours.
    if let (true, Ok(host)) = (addr.ip().is_unspecified(), env("BERTH_LISTEN_HOST", "").parse()) {
        addr.set_ip(host);
    }
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
    });
    let registries: Api<Registry> = Api::all(client.clone());
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        berth_operator::labels::MANAGED_BY,
        berth_operator::labels::OPERATOR
    ));
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        tracing::info!("shutting down");
    };
    Controller::new(registries, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<Secret>::all(client.clone()), owned.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), owned)
        // A ProxyCache is rendered into the config of the Registry it names.
        .watches(Api::<ProxyCache>::all(client.clone()), watcher::Config::default(), |pc: ProxyCache| {
            let ns = pc.namespace()?;
            Some(ObjectRef::<Registry>::new(&pc.spec.registry_ref.name).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
    Ok(())
}
