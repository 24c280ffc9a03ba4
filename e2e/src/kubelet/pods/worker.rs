//! One pod's life on this node: volumes, init containers in order, then the main ones, probes,
//! restarts, and the delete (SIGTERM, then SIGKILL after the grace period).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Preconditions};
use tokio::sync::{mpsc, watch};

use super::process::{resolve, user_of, Event, Restart, Supervised, Termination};
use crate::kubelet::context::{now, Context};
use crate::kubelet::env::{container_env, expand};
use crate::kubelet::probes::{self, ProbeState};
use crate::kubelet::sandbox::{self, Mount};
use crate::kubelet::volumes::{self, PodVolumes};

/// What the pod list tells a worker.
pub(super) enum Msg {
    Update(Box<Pod>),
    Gone,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum State {
    Waiting { reason: String, message: String },
    Running { started_at: Time },
    Terminated { code: i32, message: String, started_at: Time, finished_at: Time },
}

pub(super) struct ContainerRun {
    pub(super) spec: Container,
    pub(super) state: State,
    pub(super) last: Option<State>,
    pub(super) restarts: i32,
    pub(super) ready: bool,
    pub(super) done: bool,
    pub(super) pgid: Option<u32>,
    pub(super) readiness: Option<ProbeState>,
    pub(super) liveness: Option<ProbeState>,
}

impl ContainerRun {
    fn new(spec: Container) -> ContainerRun {
        ContainerRun {
            spec,
            state: State::Waiting { reason: "ContainerCreating".into(), message: String::new() },
            last: None,
            restarts: 0,
            ready: false,
            done: false,
            pgid: None,
            readiness: None,
            liveness: None,
        }
    }
}

pub(super) struct Worker {
    pub(super) ctx: Arc<Context>,
    pub(super) pod: Pod,
    pub(super) api: Api<Pod>,
    pub(super) ip: Ipv4Addr,
    pub(super) dir: PathBuf,
    pub(super) inits: Vec<ContainerRun>,
    pub(super) mains: Vec<ContainerRun>,
    pub(super) next_init: usize,
    pub(super) mains_started: bool,
    pub(super) volumes: Option<PodVolumes>,
    pub(super) failure: Option<(String, String)>,
    pub(super) events_tx: mpsc::UnboundedSender<Event>,
    pub(super) stop_tx: watch::Sender<bool>,
    pub(super) stopping: bool,
    pub(super) start_time: Time,
    pub(super) transitions: BTreeMap<String, (String, Time)>,
    pub(super) published: Option<serde_json::Value>,
    pub(super) http: reqwest::Client,
}

impl Worker {
    pub(super) async fn start(ctx: Arc<Context>, pod: Pod, rx: mpsc::UnboundedReceiver<Msg>) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (stop_tx, _) = watch::channel(false);
        let terminal =
            matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        let w = Worker {
            api: Api::namespaced(ctx.client.clone(), &ns),
            ip: ctx.ips.take(),
            dir: ctx.opts.state_dir.join("pods").join(&uid),
            inits: spec.init_containers.unwrap_or_default().into_iter().map(ContainerRun::new).collect(),
            mains: spec.containers.into_iter().map(ContainerRun::new).collect(),
            next_init: 0,
            mains_started: false,
            volumes: None,
            failure: None,
            events_tx,
            stop_tx,
            stopping: false,
            start_time: now(),
            transitions: BTreeMap::new(),
            published: None,
            http: probes::client(),
            ctx,
            pod,
        };
        w.run(rx, events_rx, terminal).await;
    }

    pub(super) fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or(""),
            self.pod.metadata.name.as_deref().unwrap_or("")
        )
    }

    fn restart_policy(&self) -> Restart {
        match self.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Restart::Never,
            Some("OnFailure") => Restart::OnFailure,
            _ => Restart::Always,
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut events: mpsc::UnboundedReceiver<Event>,
        terminal: bool,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut refresh_at = tokio::time::Instant::now();
        // A pod that already finished (kubelet restart) is not run again.
        let mut setup_done = terminal;
        if terminal {
            for c in self.mains.iter_mut() {
                c.done = true;
            }
        }
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Update(p)) => {
                        self.pod = *p;
                        if self.pod.metadata.deletion_timestamp.is_some() && !self.stopping {
                            self.begin_stop();
                        }
                    }
                    Some(Msg::Gone) | None => {
                        self.begin_stop();
                        self.wait_stopped(&mut events).await;
                        break;
                    }
                },
                Some(ev) = events.recv() => self.apply(ev),
                _ = tick.tick() => {
                    if !setup_done && !self.stopping {
                        setup_done = self.setup().await;
                    }
                    if setup_done && !self.stopping {
                        self.advance();
                        self.probe().await;
                        if tokio::time::Instant::now() >= refresh_at {
                            refresh_at = tokio::time::Instant::now() + Duration::from_secs(2);
                            self.refresh_volumes().await;
                        }
                    }
                    self.publish().await;
                    if self.stopping && self.all_stopped() {
                        self.finish_delete().await;
                        break;
                    }
                }
            }
        }
        self.ctx.ips.give(self.ip);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Volumes, then the first init container (or the main ones). Returns true once done.
    async fn setup(&mut self) -> bool {
        let ip = self.ip.to_string();
        match volumes::prepare(&self.ctx, &self.pod, &self.dir.join("volumes"), &ip).await {
            Ok(v) => self.volumes = Some(v),
            Err(e) => {
                let message = format!("{e:#}");
                for c in self.inits.iter_mut().chain(self.mains.iter_mut()) {
                    c.state = State::Waiting { reason: "ContainerCreating".into(), message: message.clone() };
                }
                tracing::info!(pod = %self.key(), error = %message, "volumes not ready yet");
                return false;
            }
        }
        true
    }

    /// Starts whatever may start now: the next init container, or all main containers.
    fn advance(&mut self) {
        if self.failure.is_some() || self.mains_started {
            return;
        }
        if self.next_init < self.inits.len() {
            let idx = self.next_init;
            let c = &self.inits[idx];
            if c.pgid.is_none()
                && !c.done
                && !matches!(c.state, State::Terminated { .. } | State::Running { .. })
            {
                let policy =
                    if self.restart_policy() == Restart::Never { Restart::Never } else { Restart::OnFailure };
                self.launch(true, idx, policy);
            }
            return;
        }
        self.mains_started = true;
        for idx in 0..self.mains.len() {
            let policy = self.restart_policy();
            self.launch(false, idx, policy);
        }
    }

    fn launch(&mut self, init: bool, idx: usize, policy: Restart) {
        let c = if init { &mut self.inits[idx] } else { &mut self.mains[idx] };
        let spec = c.spec.clone();
        let (binary, name, args) = match resolve(&self.ctx, &spec) {
            Ok(r) => r,
            Err((reason, message)) => {
                c.state = State::Waiting { reason: reason.clone(), message: message.clone() };
                c.done = true;
                self.failure = Some((reason, message));
                return;
            }
        };
        let ctx = self.ctx.clone();
        let pod = self.pod.clone();
        let ip = self.ip.to_string();
        let dir = self.dir.join(if init { "init" } else { "containers" }).join(&spec.name);
        let mounts = self.mounts(&spec);
        let events = self.events_tx.clone();
        let stop = self.stop_tx.subscribe();
        let grace = self.grace();
        tokio::spawn(async move {
            let env = match container_env(&ctx, &pod, &spec, &ip).await {
                Ok(env) => env,
                Err(e) => {
                    let _ = events.send(Event::Waiting {
                        init,
                        idx,
                        reason: "CreateContainerConfigError".into(),
                        message: format!("{e:#}"),
                    });
                    let _ = events.send(Event::Done { init, idx });
                    return;
                }
            };
            let vars: BTreeMap<String, String> = env.iter().cloned().collect();
            let args: Vec<String> = args.iter().map(|a| expand(a, &vars)).collect();
            let spec = Supervised {
                ctx,
                dir,
                binary,
                name,
                mounts,
                args,
                env,
                working_dir: spec.working_dir.clone().unwrap_or_else(|| "/".into()),
                user: user_of(&pod, &spec),
                init,
                idx,
                policy,
                grace,
                termination: Termination::of(&spec),
            };
            spec.run(events, stop).await;
        });
    }

    fn mounts(&self, c: &Container) -> Vec<Mount> {
        let Some(vols) = &self.volumes else { return Vec::new() };
        c.volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| {
                let base = vols.paths.get(&m.name)?;
                let source = match &m.sub_path {
                    Some(sp) if !sp.is_empty() && !sp.split('/').any(|c| c == "..") => base.join(sp),
                    _ => base.clone(),
                };
                Some(Mount { source, target: m.mount_path.clone(), read_only: m.read_only.unwrap_or(false) })
            })
            .collect()
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .clamp(0, 30);
        Duration::from_secs(secs as u64)
    }

    fn apply(&mut self, ev: Event) {
        let (init, idx) = match &ev {
            Event::Started { init, idx, .. }
            | Event::Exited { init, idx, .. }
            | Event::Waiting { init, idx, .. }
            | Event::Done { init, idx } => (*init, *idx),
        };
        let started = tokio::time::Instant::now();
        let c = if init { &mut self.inits[idx] } else { &mut self.mains[idx] };
        match ev {
            Event::Started { pgid, at, .. } => {
                c.pgid = Some(pgid);
                if matches!(c.state, State::Terminated { .. }) {
                    c.last = Some(c.state.clone());
                    c.restarts += 1;
                }
                c.state = State::Running { started_at: at };
                c.ready = c.spec.readiness_probe.is_none();
                c.readiness = c.spec.readiness_probe.clone().map(|p| ProbeState::new(p, started));
                c.liveness = c.spec.liveness_probe.clone().map(|p| ProbeState::new(p, started));
            }
            Event::Exited { code, message, at, .. } => {
                let started_at = match &c.state {
                    State::Running { started_at } => started_at.clone(),
                    _ => at.clone(),
                };
                c.state = State::Terminated { code, message, started_at, finished_at: at };
                c.pgid = None;
                c.ready = false;
            }
            Event::Waiting { reason, message, .. } => c.state = State::Waiting { reason, message },
            Event::Done { .. } => {
                c.done = true;
                if init {
                    let ok = matches!(c.state, State::Terminated { code: 0, .. });
                    if ok {
                        self.next_init = idx + 1;
                    } else if !self.stopping {
                        self.failure = Some((
                            "InitContainerFailed".into(),
                            format!("init container {} failed", c.spec.name),
                        ));
                    }
                }
            }
        }
    }

    async fn probe(&mut self) {
        let ip = self.ip.to_string();
        for c in self.mains.iter_mut() {
            if !matches!(c.state, State::Running { .. }) {
                continue;
            }
            if let Some(p) = c.readiness.as_mut().filter(|p| p.due()) {
                let ok = probes::check(&c.spec, &p.probe, &ip, &self.http).await;
                if let Some(v) = p.record(ok) {
                    c.ready = v;
                }
            }
            if let Some(p) = c.liveness.as_mut().filter(|p| p.due()) {
                let ok = probes::check(&c.spec, &p.probe, &ip, &self.http).await;
                if p.record(ok) == Some(false) {
                    tracing::info!(container = %c.spec.name, "liveness probe failed; restarting");
                    if let Some(pgid) = c.pgid {
                        sandbox::signal_group(pgid, "-KILL");
                    }
                }
            }
        }
    }

    async fn refresh_volumes(&mut self) {
        if let Some(v) = &self.volumes {
            if let Err(e) = volumes::refresh(&self.ctx, &self.pod, v, &self.ip.to_string()).await {
                tracing::debug!(pod = %self.key(), error = %e, "volume refresh failed");
            }
        }
    }

    fn begin_stop(&mut self) {
        self.stopping = true;
        let _ = self.stop_tx.send(true);
    }

    fn all_stopped(&self) -> bool {
        self.inits.iter().chain(self.mains.iter()).all(|c| c.pgid.is_none())
    }

    async fn wait_stopped(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        let deadline = tokio::time::Instant::now() + self.grace() + Duration::from_secs(5);
        while !self.all_stopped() && tokio::time::Instant::now() < deadline {
            if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                self.apply(ev);
            }
        }
    }

    /// The kubelet's last word on a deleted pod: remove it for good.
    async fn finish_delete(&mut self) {
        if self.pod.metadata.deletion_timestamp.is_none() {
            return;
        }
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: self.pod.metadata.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        };
        if let Err(e) = self.api.delete(&name, &dp).await {
            tracing::debug!(pod = %self.key(), error = %e, "final delete");
        }
    }
}
