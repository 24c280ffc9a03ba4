//! The `berth` binary as an operator runs it, and clients that misbehave.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{client, eventually};

pub struct Berth {
    pub child: Child,
    pub url: String,
}

impl Berth {
    pub async fn spawn(data: &Path, addr: &str, extra: &[&str]) -> Berth {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", addr, "--data-dir"])
            .arg(data)
            .args(extra)
            .env("BERTH_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("berth starts");
        let url = format!("http://{addr}");
        let up = eventually(Duration::from_secs(20), || async {
            client().get(format!("{url}/v2/")).send().await.is_ok()
        })
        .await;
        assert!(up, "berth answered on {addr}");
        // What answered must be this berth, not a server that took the port before it bound.
        assert!(matches!(child.try_wait(), Ok(None)), "berth on {addr} exited: its port was taken?");
        Berth { child, url }
    }

    /// berth with `yaml` as its config file (written into `data`, its data directory).
    pub async fn spawn_with_config(data: &Path, addr: &str, yaml: &str) -> Berth {
        let config = data.join("berth.yaml");
        std::fs::write(&config, yaml).expect("writing the config");
        Berth::spawn(data, addr, &["--config", config.to_str().expect("a UTF-8 path")]).await
    }

    /// Waits (bounded) for the process to end; whether it ended with success.
    pub async fn exits_cleanly(&mut self) -> bool {
        let child = &mut self.child;
        let mut status = None;
        for _ in 0..200 {
            status = child.try_wait().ok().flatten();
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        status.is_some_and(|s| s.success())
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// One unlabelled sample of `/metrics`; 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let Ok(resp) = client().get(format!("{}/metrics", self.url)).send().await else { return 0.0 };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn received_bytes(&self) -> u64 {
        let text = client().get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("berth_http_received_bytes_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address for a `berth` process to listen on (`berth_core::ports`: outside the range
/// other sockets take their local ports from between its choice and its use).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", berth_core::ports::free_port().unwrap())
}

/// A request body that sends `first`, then waits for more on the returned channel.
pub fn stalled_body(first: Vec<u8>) -> (reqwest::Body, mpsc::Sender<Vec<u8>>) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) }),
    );
    (reqwest::Body::wrap_stream(stream), tx)
}
