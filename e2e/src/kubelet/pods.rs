//! Pods on this node: binding, one worker per pod, container supervision and pod status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use tokio::sync::{mpsc, watch};

use super::probes::{self, ProbeState};
use super::sandbox::{self, Mount};
use super::volumes::{self, PodVolumes};
use super::Context;

/// Pod IPs: the second address of the pod range onwards, one per running pod.
pub struct IpPool {
    base: u32,
    used: Mutex<BTreeSet<u32>>,
}

impl IpPool {
    pub fn new((a, b): (u8, u8)) -> IpPool {
        IpPool { base: u32::from(Ipv4Addr::new(a, b, 0, 0)), used: Mutex::new(BTreeSet::new()) }
    }

    fn take(&self) -> Ipv4Addr {
        let Ok(mut used) = self.used.lock() else { return Ipv4Addr::from(self.base + 2) };
        let n = (2..65_000u32).find(|n| !used.contains(n)).unwrap_or(2);
        used.insert(n);
        Ipv4Addr::from(self.base + n)
    }

    fn give(&self, ip: Ipv4Addr) {
        let n = u32::from(ip).wrapping_sub(self.base);
        if let Ok(mut used) = self.used.lock() {
            used.remove(&n);
        }
    }
}

enum Msg {
    Update(Box<Pod>),
    Gone,
}

struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Pods {
    ctx: Arc<Context>,
    workers: Mutex<HashMap<String, Handle>>,
}

impl Pods {
    pub fn new(ctx: Arc<Context>) -> Pods {
        Pods { ctx, workers: Mutex::new(HashMap::new()) }
    }

    pub async fn run(&self) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => self.seen(p),
                Ok(watcher::Event::Delete(p)) => self.deleted(&p),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            self.reap();
        }
        Ok(())
    }

    fn seen(&self, pod: Pod) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if node.is_empty() {
            if pod.metadata.deletion_timestamp.is_none() {
                tokio::spawn(bind(self.ctx.clone(), pod));
            }
            return;
        }
        if node != self.ctx.opts.node_name {
            return;
        }
        let Ok(mut workers) = self.workers.lock() else { return };
        if let Some(h) = workers.get(&uid) {
            let _ = h.tx.send(Msg::Update(Box::new(pod)));
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(Worker::start(self.ctx.clone(), pod, rx));
        workers.insert(uid, Handle { tx, task });
    }

    fn deleted(&self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Ok(workers) = self.workers.lock() {
            if let Some(h) = workers.get(&uid) {
                let _ = h.tx.send(Msg::Gone);
            }
        }
    }

    fn reap(&self) {
        if let Ok(mut workers) = self.workers.lock() {
            workers.retain(|_, h| !h.task.is_finished());
        }
    }

    pub async fn stop_all(&self) {
        let handles: Vec<Handle> = match self.workers.lock() {
            Ok(mut w) => w.drain().map(|(_, h)| h).collect(),
            Err(_) => return,
        };
        for h in &handles {
            let _ = h.tx.send(Msg::Gone);
        }
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(35), h.task).await;
        }
    }
}

/// The scheduler's job, for the only node there is.
async fn bind(ctx: Arc<Context>, pod: Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let binding = serde_json::json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": ctx.opts.node_name},
    });
    match api
        .create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
        .await
    {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "bound"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "binding failed"),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting { reason: String, message: String },
    Running { started_at: Time },
    Terminated { code: i32, started_at: Time, finished_at: Time },
}

struct ContainerRun {
    spec: Container,
    state: State,
    last: Option<State>,
    restarts: i32,
    ready: bool,
    done: bool,
    pgid: Option<u32>,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
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

enum Event {
    Started { init: bool, idx: usize, pgid: u32, at: Time },
    Exited { init: bool, idx: usize, code: i32, at: Time },
    Waiting { init: bool, idx: usize, reason: String, message: String },
    Done { init: bool, idx: usize },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

struct Worker {
    ctx: Arc<Context>,
    pod: Pod,
    api: Api<Pod>,
    ip: Ipv4Addr,
    dir: PathBuf,
    inits: Vec<ContainerRun>,
    mains: Vec<ContainerRun>,
    next_init: usize,
    mains_started: bool,
    volumes: Option<PodVolumes>,
    failure: Option<(String, String)>,
    events_tx: mpsc::UnboundedSender<Event>,
    stop_tx: watch::Sender<bool>,
    stopping: bool,
    start_time: Time,
    transitions: BTreeMap<String, (String, Time)>,
    published: Option<serde_json::Value>,
    http: reqwest::Client,
}

impl Worker {
    async fn start(ctx: Arc<Context>, pod: Pod, rx: mpsc::UnboundedReceiver<Msg>) {
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
            start_time: super::now(),
            transitions: BTreeMap::new(),
            published: None,
            http: probes::client(),
            ctx,
            pod,
        };
        w.run(rx, events_rx, terminal).await;
    }

    fn key(&self) -> String {
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
            Event::Exited { code, at, .. } => {
                let started_at = match &c.state {
                    State::Running { started_at } => started_at.clone(),
                    _ => at.clone(),
                };
                c.state = State::Terminated { code, started_at, finished_at: at };
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

    fn phase(&self) -> (&'static str, Option<(String, String)>) {
        if let Some((reason, message)) = &self.failure {
            return ("Failed", Some((reason.clone(), message.clone())));
        }
        if !self.mains_started {
            return ("Pending", None);
        }
        let all_done = self.mains.iter().all(|c| c.done && matches!(c.state, State::Terminated { .. }));
        if all_done {
            let ok = self.mains.iter().all(|c| matches!(c.state, State::Terminated { code: 0, .. }));
            return (if ok { "Succeeded" } else { "Failed" }, None);
        }
        let any_running =
            self.mains.iter().any(|c| matches!(c.state, State::Running { .. } | State::Terminated { .. }));
        (if any_running { "Running" } else { "Pending" }, None)
    }

    fn condition(&mut self, kind: &str, ok: bool) -> serde_json::Value {
        let status = if ok { "True" } else { "False" };
        let entry =
            self.transitions.entry(kind.to_owned()).or_insert_with(|| (status.to_owned(), super::now()));
        if entry.0 != status {
            *entry = (status.to_owned(), super::now());
        }
        serde_json::json!({"type": kind, "status": status, "lastTransitionTime": entry.1, "lastProbeTime": null})
    }

    async fn publish(&mut self) {
        let (phase, failure) = self.phase();
        let running = phase == "Running";
        let inits_done = self.next_init >= self.inits.len();
        let ready = running && self.mains.iter().all(|c| c.ready);
        let conditions = vec![
            self.condition("PodScheduled", true),
            self.condition("Initialized", inits_done),
            self.condition("ContainersReady", ready),
            self.condition("Ready", ready),
        ];
        let ip = self.ip.to_string();
        let mut status = serde_json::json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": self.start_time,
            "containerStatuses": self.mains.iter().map(container_status).collect::<Vec<_>>(),
            "initContainerStatuses": self.inits.iter().map(container_status).collect::<Vec<_>>(),
        });
        if let Some((reason, message)) = failure {
            status["reason"] = reason.into();
            status["message"] = message.into();
        }
        if self.published.as_ref() == Some(&status) {
            return;
        }
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match self
            .api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await
        {
            Ok(_) => self.published = Some(status),
            Err(e) => tracing::debug!(pod = %self.key(), error = %e, "status update failed"),
        }
    }
}

fn state_json(s: &State) -> serde_json::Value {
    match s {
        State::Waiting { reason, message } => {
            serde_json::json!({"waiting": {"reason": reason, "message": message}})
        }
        State::Running { started_at } => serde_json::json!({"running": {"startedAt": started_at}}),
        State::Terminated { code, started_at, finished_at } => serde_json::json!({"terminated": {
            "exitCode": code, "reason": if *code == 0 { "Completed" } else { "Error" },
            "startedAt": started_at, "finishedAt": finished_at}}),
    }
}

fn container_status(c: &ContainerRun) -> serde_json::Value {
    let mut s = serde_json::json!({
        "name": c.spec.name,
        "image": c.spec.image.clone().unwrap_or_default(),
        "imageID": format!("berth-process://{}", c.spec.image.clone().unwrap_or_default()),
        "ready": c.ready,
        "started": matches!(c.state, State::Running { .. }),
        "restartCount": c.restarts,
        "state": state_json(&c.state),
    });
    if let Some(pgid) = c.pgid {
        s["containerID"] = format!("berth-process://{pgid}").into();
    }
    if let Some(last) = &c.last {
        s["lastState"] = state_json(last);
    }
    s
}

/// Which local binary runs this container, and with which arguments.
fn resolve(ctx: &Context, c: &Container) -> Result<(PathBuf, String, Vec<String>), (String, String)> {
    let image = c.image.clone().unwrap_or_default();
    if !is_berth_image(&image) {
        return Err((
            "UnsupportedImage".into(),
            format!("berth-kubelet runs only Berth images (a repository named `berth`), not {image:?}"),
        ));
    }
    let (name, mut args) = match &c.command {
        Some(cmd) if !cmd.is_empty() => {
            let name = Path::new(&cmd[0]).file_name().and_then(|f| f.to_str()).unwrap_or_default().to_owned();
            (name, cmd[1..].to_vec())
        }
        _ => ("berth".to_owned(), Vec::new()),
    };
    args.extend(c.args.iter().flatten().cloned());
    match ctx.opts.binaries.get(&name) {
        Some(path) => Ok((path.clone(), name, args)),
        None => Err((
            "UnsupportedCommand".into(),
            format!(
                "the Berth image has no binary {name:?} (known: {:?})",
                ctx.opts.binaries.keys().collect::<Vec<_>>()
            ),
        )),
    }
}

/// `registry.example/org/berth:1.0`, `berth@sha256:…` and `berth` are Berth images.
pub fn is_berth_image(image: &str) -> bool {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next() == Some("berth")
}

fn user_of(pod: &Pod, c: &Container) -> Option<String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let uid = csc.and_then(|s| s.run_as_user).or_else(|| psc.and_then(|s| s.run_as_user))?;
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group))
        .or_else(|| psc.and_then(|s| s.fs_group))
        .unwrap_or(uid);
    Some(format!("{uid}:{gid}"))
}

/// Kubernetes' `$(VAR)` expansion in commands and env values; `$$` escapes.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if vars.contains_key(&inner[..end]) => {
                    out.push_str(&vars[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                Some(end) => {
                    out.push_str(&rest[i..i + 2 + end + 1]);
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The downward API's view of the pod.
pub fn field_value(pod: &Pod, pod_ip: &str, path: &str) -> anyhow::Result<String> {
    let m = &pod.metadata;
    let quoted =
        |p: &str, prefix: &str| p.strip_prefix(prefix).and_then(|r| r.strip_suffix("']")).map(str::to_owned);
    let value = match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => kv_lines(m.labels.as_ref()),
        "metadata.annotations" => kv_lines(m.annotations.as_ref()),
        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => {
            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default()
        }
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_owned(),
        p => {
            if let Some(k) = quoted(p, "metadata.labels['") {
                m.labels.as_ref().and_then(|l| l.get(&k).cloned()).unwrap_or_default()
            } else if let Some(k) = quoted(p, "metadata.annotations['") {
                m.annotations.as_ref().and_then(|l| l.get(&k).cloned()).unwrap_or_default()
            } else {
                anyhow::bail!("unsupported fieldRef {p:?}")
            }
        }
    };
    Ok(value)
}

fn kv_lines(map: Option<&BTreeMap<String, String>>) -> String {
    map.map(|m| m.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect()).unwrap_or_default()
}

async fn container_env(
    ctx: &Context,
    pod: &Pod,
    c: &Container,
    ip: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), "/berth/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), pod.metadata.name.clone().unwrap_or_default()),
        ("KUBERNETES_SERVICE_HOST".into(), ctx.opts.kubernetes_service_ip.to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into()),
        ("KUBERNETES_PORT".into(), format!("tcp://{}:443", ctx.opts.kubernetes_service_ip)),
        // Every pod shares the host's network: Berth narrows a wildcard listen address to this.
        ("BERTH_LISTEN_HOST".into(), ip.into()),
    ];
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match maps.get_opt(&r.name).await? {
                Some(cm) => vars.extend(
                    cm.data.unwrap_or_default().into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)),
                ),
                None if r.optional == Some(true) => {}
                None => anyhow::bail!("configmap {ns}/{} not found", r.name),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secrets.get_opt(&r.name).await? {
                Some(s) => vars.extend(
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned())),
                ),
                None if r.optional == Some(true) => {}
                None => anyhow::bail!("secret {ns}/{} not found", r.name),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let known: BTreeMap<String, String> = vars.iter().cloned().collect();
        let value = if let Some(v) = &e.value {
            expand(v, &known)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_value(pod, ip, &f.field_path)?
            } else if let Some(s) = &from.secret_key_ref {
                let secret = secrets.get_opt(&s.name).await?;
                match secret.and_then(|x| x.data).and_then(|d| d.get(&s.key).cloned()) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if s.optional == Some(true) => continue,
                    None => anyhow::bail!("secret key {ns}/{}:{} not found", s.name, s.key),
                }
            } else if let Some(m) = &from.config_map_key_ref {
                let cm = maps.get_opt(&m.name).await?;
                match cm.and_then(|x| x.data).and_then(|d| d.get(&m.key).cloned()) {
                    Some(v) => v,
                    None if m.optional == Some(true) => continue,
                    None => anyhow::bail!("configmap key {ns}/{}:{} not found", m.name, m.key),
                }
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(c, &r.resource)
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        vars.retain(|(k, _)| k != &e.name);
        vars.push((e.name.clone(), value));
    }
    Ok(vars)
}

fn resource_value(c: &Container, resource: &str) -> String {
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let r = c.resources.as_ref();
    let list = if kind == "requests" {
        r.and_then(|r| r.requests.as_ref())
    } else {
        r.and_then(|r| r.limits.as_ref())
    };
    list.and_then(|l| l.get(name)).map(|q| q.0.clone()).unwrap_or_else(|| match name {
        "cpu" => {
            std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_else(|_| "1".into())
        }
        _ => "0".into(),
    })
}

/// One container's life: start, wait, restart per policy, stop on request.
struct Supervised {
    ctx: Arc<Context>,
    dir: PathBuf,
    binary: PathBuf,
    name: String,
    mounts: Vec<Mount>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: String,
    user: Option<String>,
    init: bool,
    idx: usize,
    policy: Restart,
    grace: Duration,
}

impl Supervised {
    async fn run(self, events: mpsc::UnboundedSender<Event>, mut stop: watch::Receiver<bool>) {
        let (init, idx) = (self.init, self.idx);
        let mut restarts = 0u32;
        let log = self.dir.join("output.log");
        loop {
            if *stop.borrow() {
                break;
            }
            let launch = sandbox::Launch {
                dir: &self.dir,
                binary: &self.binary,
                binary_name: &self.name,
                hosts_file: &self.ctx.opts.hosts_file,
                working_dir: &self.working_dir,
                user: self.user.clone(),
                mounts: &self.mounts,
                args: &self.args,
                env: &self.env,
                log: &log,
            };
            let child = sandbox::command(&launch).and_then(|mut c| c.spawn());
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    let _ = events.send(Event::Waiting {
                        init,
                        idx,
                        reason: "RunContainerError".into(),
                        message: e.to_string(),
                    });
                    if !backoff(&mut stop, restarts).await {
                        break;
                    }
                    restarts += 1;
                    continue;
                }
            };
            let pgid = child.id().unwrap_or(0);
            let pid_file = self.ctx.opts.state_dir.join("pids").join(pgid.to_string());
            let _ = std::fs::write(&pid_file, "");
            let _ = events.send(Event::Started { init, idx, pgid, at: super::now() });
            let status = tokio::select! {
                s = child.wait() => s,
                _ = stop.changed() => {
                    sandbox::signal_group(pgid, "-TERM");
                    match tokio::time::timeout(self.grace, child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            sandbox::signal_group(pgid, "-KILL");
                            child.wait().await
                        }
                    }
                }
            };
            // Whatever the main process left in its group goes with it.
            sandbox::signal_group(pgid, "-KILL");
            let _ = std::fs::remove_file(&pid_file);
            let code = status.map(|s| exit_code(&s)).unwrap_or(128);
            let _ = events.send(Event::Exited { init, idx, code, at: super::now() });
            let again = match self.policy {
                Restart::Always => true,
                Restart::OnFailure => code != 0,
                Restart::Never => false,
            };
            if !again || *stop.borrow() {
                break;
            }
            if !backoff(&mut stop, restarts).await {
                break;
            }
            restarts += 1;
        }
        let _ = events.send(Event::Done { init, idx });
    }
}

fn exit_code(s: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// Waits 1, 2, 4 … 20 s before a restart; false if asked to stop meanwhile.
async fn backoff(stop: &mut watch::Receiver<bool>, restarts: u32) -> bool {
    let wait = Duration::from_secs(1u64 << restarts.min(4)).min(Duration::from_secs(20));
    tokio::select! {
        _ = tokio::time::sleep(wait) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berth_images() {
        for yes in ["berth", "berth:1.0", "ghcr.io/berth-dev/berth:0.1.0", "localhost:5000/berth@sha256:abc"]
        {
            assert!(is_berth_image(yes), "{yes}");
        }
        for no in ["nginx", "library/alpine:3", "berth-operator", "ghcr.io/berth/other:1"] {
            assert!(!is_berth_image(no), "{no}");
        }
    }

    #[test]
    fn variable_expansion() {
        let vars: BTreeMap<String, String> = [("POD_IP".to_owned(), "127.100.0.2".to_owned())].into();
        assert_eq!(expand("--listen=$(POD_IP):5000", &vars), "--listen=127.100.0.2:5000");
        assert_eq!(expand("$$(POD_IP)", &vars), "$(POD_IP)");
        assert_eq!(expand("$(MISSING) $", &vars), "$(MISSING) $");
    }
}
