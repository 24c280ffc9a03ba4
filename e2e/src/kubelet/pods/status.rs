//! What a worker reports: the pod's phase, conditions and container statuses, patched only when
//! they change.

use kube::api::{Patch, PatchParams};

use super::worker::{ContainerRun, State, Worker};
use crate::kubelet::context::now;

impl Worker {
    pub(super) fn phase(&self) -> (&'static str, Option<(String, String)>) {
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
        let entry = self.transitions.entry(kind.to_owned()).or_insert_with(|| (status.to_owned(), now()));
        if entry.0 != status {
            *entry = (status.to_owned(), now());
        }
        serde_json::json!({"type": kind, "status": status, "lastTransitionTime": entry.1, "lastProbeTime": null})
    }

    pub(super) async fn publish(&mut self) {
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
        State::Terminated { code, message, started_at, finished_at } => {
            let mut t = serde_json::json!({
                "exitCode": code, "reason": if *code == 0 { "Completed" } else { "Error" },
                "startedAt": started_at, "finishedAt": finished_at});
            if !message.is_empty() {
                t["message"] = message.clone().into();
            }
            serde_json::json!({ "terminated": t })
        }
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
