//! The `berth` binary as an operator runs it: killed with SIGKILL mid-upload, stopped with SIGTERM
//! while uploads are in flight, and serving TLS while its certificate is replaced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::berth::*;
use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_leaves_nothing_partial_and_keeps_what_finished() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let berth = Berth::spawn(dir.path(), &addr, &[]).await;
    let c = client();
    let url = berth.url.clone();

    // Finished content: three blobs and a manifest tagged over two of them.
    let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1_000_000 + i as usize]).collect();
    for b in &blobs {
        let r = c
            .post(format!("{url}/v2/crash/done/blobs/uploads/?digest={}", sha256(b)))
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&blobs[0]), "size": blobs[0].len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&blobs[1]), "size": blobs[1].len()}],
    }))
    .unwrap();
    let r = c
        .put(format!("{url}/v2/crash/done/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // A resumable session with one chunk recorded.
    let loc = c.post(format!("{url}/v2/crash/session/blobs/uploads/")).send().await.unwrap().headers()
        ["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = c
        .patch(format!("{url}{loc}"))
        .header("content-range", "0-9")
        .body(vec![9u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Uploads cut off in the middle: monolithic and streamed PATCH, each stalled after 2 MB.
    let before = berth.received_bytes().await;
    let partial: Vec<Vec<u8>> = (0..4u8).map(|i| vec![100 + i; 4_000_000]).collect();
    let mut senders = Vec::new();
    for (i, p) in partial.iter().enumerate() {
        let (body, tx) = stalled_body(p[..2_000_000].to_vec());
        senders.push(tx);
        let req = if i % 2 == 0 {
            c.post(format!("{url}/v2/crash/partial/blobs/uploads/?digest={}", sha256(p)))
        } else {
            let loc =
                c.post(format!("{url}/v2/crash/partial/blobs/uploads/")).send().await.unwrap().headers()
                    ["location"]
                    .to_str()
                    .unwrap()
                    .to_owned();
            c.patch(format!("{url}{loc}"))
        };
        tokio::spawn(req.body(body).send());
    }
    let arrived =
        eventually(Duration::from_secs(30), || async { berth.received_bytes().await >= before + 7_000_000 })
            .await;
    assert!(arrived, "the partial uploads reached the server");

    let mut berth = berth;
    berth.child.kill().unwrap(); // SIGKILL
    berth.child.wait().unwrap();
    drop(senders);

    let berth = Berth::spawn(dir.path(), &addr, &[]).await;
    for b in &blobs {
        let r = c.get(format!("{url}/v2/crash/done/blobs/{}", sha256(b))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.bytes().await.unwrap().as_ref() == b.as_slice(), "finished blob intact");
    }
    let r = c.get(format!("{url}/v2/crash/done/manifests/v1")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), manifest.as_slice());
    for p in &partial {
        let r = c.head(format!("{url}/v2/crash/partial/blobs/{}", sha256(p))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "a cut-off upload is not visible");
    }
    let status = c.get(format!("{url}{loc}")).send().await.unwrap();
    assert_eq!(status.headers()["range"], "0-9", "the recorded chunk survived");
    let all = [vec![9u8; 10], vec![8u8; 5]].concat();
    let r = c
        .put(format!("{url}{loc}?digest={}", sha256(&all)))
        .header("content-range", "10-14")
        .body(vec![8u8; 5])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "and the session can be finished");
    let leftovers = std::fs::read_dir(dir.path().join("storage/tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "temp files of the killed writes were cleared");
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_uploads_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut berth = Berth::spawn(dir.path(), &addr, &[]).await;
    let data = vec![42u8; 3_000_000];
    let d = sha256(&data);
    let (body, tx) = stalled_body(data[..1_000_000].to_vec());
    let req = client().post(format!("{}/v2/drain/blobs/uploads/?digest={d}", berth.url)).body(body).send();
    let upload = tokio::spawn(req);
    let arrived =
        eventually(Duration::from_secs(20), || async { berth.received_bytes().await >= 1_000_000 }).await;
    assert!(arrived);

    berth.signal("-TERM");
    // New connections are refused once the listener closed...
    let refused = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    assert!(refused, "listener closed after SIGTERM");
    // ...while the upload in flight completes.
    tx.send(data[1_000_000..].to_vec()).await.unwrap();
    drop(tx);
    let resp = upload.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(berth.exits_cleanly().await, "berth exits once drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_shutdown_delay_turns_readiness_off_before_the_listener_closes() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut berth = Berth::spawn_with_config(dir.path(), &addr, "limits: {shutdown_delay: 5s}\n").await;
    let c = client();
    let ready = c.get(format!("{}/readyz", berth.url)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    // A keep-alive connection opened before the signal.
    let kept = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(kept.get(format!("{}/v2/", berth.url)).send().await.unwrap().status(), StatusCode::OK);

    berth.signal("-TERM");
    let not_ready = eventually(Duration::from_secs(10), || async {
        let r = client().get(format!("{}/readyz", berth.url)).send().await;
        r.is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert!(not_ready, "readiness is off at once");
    // During the delay new connections are still served, and each response closes its connection
    // so clients move to replicas that stay.
    let r = client().get(format!("{}/v2/", berth.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "still serving during the delay");
    assert_eq!(r.headers()["connection"], "close");
    let r = kept.get(format!("{}/v2/", berth.url)).send().await.unwrap();
    assert_eq!(r.headers()["connection"], "close", "a kept-alive connection is told to close too");
    let body: serde_json::Value =
        client().get(format!("{}/readyz", berth.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["stopping"], true, "{body}");
    // Then the listener closes and berth exits.
    let refused = eventually(Duration::from_secs(15), || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    assert!(refused, "listener closed after the delay");
    assert!(berth.exits_cleanly().await, "berth exits cleanly");
}

fn self_signed(name: &str) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Connects over TLS trusting only `trusted`, returns the leaf the server presented.
async fn handshake(addr: &str, trusted: &[u8]) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(trusted.to_vec())).ok()?;
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let mut tls = connector.connect(name, tcp).await.ok()?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    if !buf.starts_with(b"HTTP/1.1 200") {
        return None;
    }
    let leaf = tls.get_ref().1.peer_certificates()?.first()?.to_vec();
    Some(leaf)
}

/// berth serving HTTPS with a self-signed pair A (files `tls.crt`/`tls.key` in `dir`, re-read
/// every 100 ms), its log in `berth.log`, once a client sees certificate A.
struct TlsBerth {
    _berth: Berth,
    addr: String,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    log: std::path::PathBuf,
    der_a: Vec<u8>,
}

async fn tls_berth(dir: &std::path::Path, extra_config: &str) -> TlsBerth {
    let (cert_a, key_a, der_a) = self_signed("berth-a");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, cert_a).unwrap();
    std::fs::write(&key, key_a).unwrap();
    let config = dir.join("berth.yaml");
    let tls = format!("tls: {{cert: {}, key: {}, reload_interval: 100ms}}\n", cert.display(), key.display());
    std::fs::write(&config, format!("{tls}{extra_config}")).unwrap();
    let log = dir.join("berth.log");
    // Port 0, named in the log: a port found free here could be taken by another test's
    // connection before berth binds it.
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let berth = Berth { child, url: String::new() };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(Duration::from_secs(20), || async { listening_on(&log_text()).is_some() }).await;
    let addr = listening_on(&log_text())
        .unwrap_or_else(|| panic!("berth names the address it listens on:\n{}", log_text()));
    let up = eventually(Duration::from_secs(20), || async { handshake(&addr, &der_a).await.is_some() }).await;
    assert!(up, "serves HTTPS with certificate A:\n{}", log_text());
    TlsBerth { _berth: berth, addr, cert, key, log, der_a }
}

/// The address in berth's "listening on https://…" log line.
fn listening_on(log: &str) -> Option<String> {
    let (_, after) = log.split_once("listening on https://")?;
    let addr: String = after.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    addr.contains(':').then_some(addr)
}

/// Moves `text` into place at `path`, the way a Secret update does.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_is_reloaded_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let TlsBerth { addr, cert, key, der_a, _berth, .. } = tls_berth(dir.path(), "").await;
    let (cert_b, key_b, der_b) = self_signed("berth-b");
    assert_eq!(handshake(&addr, &der_a).await.unwrap(), der_a);

    // Replace the pair the way a Secret update does: new files moved into place.
    replace(&key, &key_b);
    replace(&cert, &cert_b);
    let switched = eventually(Duration::from_secs(20), || async {
        handshake(&addr, &der_b).await.as_deref() == Some(&der_b[..])
    })
    .await;
    assert!(switched, "certificate B is served after reload");
    assert!(handshake(&addr, &der_a).await.is_none(), "A is no longer presented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_file_truncated_under_a_download_fails_that_download_only() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let berth = Berth::spawn(dir.path(), &addr, &[]).await;
    let big: Vec<u8> = (0..(24u32 << 20)).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&big);
    let pushed = client()
        .post(format!("{}/v2/cut/blobs/uploads/?digest={digest}", berth.url))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let file = dir.path().join("storage/blobs/sha256").join(&digest[7..9]).join(&digest[7..]);
    assert!(file.is_file(), "{}", file.display());

    let resp = client().get(format!("{}/v2/cut/blobs/{digest}", berth.url)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // The file shrinks while the download runs (a broken disk, a network filesystem, an admin).
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(1 << 20).unwrap();
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        if chunk.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the download ended with an error, not a short success");
    // The server is still there for everyone else.
    let alive = client().get(format!("{}/v2/", berth.url)).send().await.unwrap();
    assert_eq!(alive.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_before_its_key_keeps_the_old_pair_serving() {
    let dir = tempfile::tempdir().unwrap();
    let TlsBerth { addr, cert, key, log, der_a, _berth } = tls_berth(dir.path(), "").await;
    let (cert_b, key_b, der_b) = self_signed("berth-b");

    // The certificate alone is replaced: berth notices, refuses the pair, keeps serving A.
    replace(&cert, &cert_b);
    let refused = eventually(Duration::from_secs(20), || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("does not belong to the certificate")
    })
    .await;
    assert!(
        refused,
        "the mismatched pair was refused:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(handshake(&addr, &der_a).await.as_deref(), Some(&der_a[..]), "A still serves");

    // Its key follows: now B serves.
    replace(&key, &key_b);
    let switched = eventually(Duration::from_secs(20), || async {
        handshake(&addr, &der_b).await.as_deref() == Some(&der_b[..])
    })
    .await;
    assert!(switched, "certificate B serves once its key is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_says_hello_is_disconnected() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let TlsBerth { addr, _berth, .. } =
        tls_berth(dir.path(), "limits: {tls_handshake_timeout: 500ms}\n").await;
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "a client that never sent a ClientHello was let go");
}

/// Memory storage loses its blobs on restart; its metadata must go with them, or a restarted
/// berth reports blobs present that it can no longer serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_storage_forgets_its_metadata_with_its_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.yaml");
    std::fs::write(&config, "storage: {kind: memory}\n").unwrap();
    let addr = free_addr();
    let args = ["--config", config.to_str().unwrap()];
    let berth = Berth::spawn(&dir.path().join("data"), &addr, &args).await;
    let digest =
        common::upstream::push_blob_to(&berth.url, "mem/app", bytes::Bytes::from_static(b"fleeting")).await;
    let head = |url: String| async move { client().head(url).send().await.unwrap().status() };
    let blob = format!("{}/v2/mem/app/blobs/{digest}", berth.url);
    assert_eq!(head(blob.clone()).await, StatusCode::OK);
    drop(berth);

    let berth = Berth::spawn(&dir.path().join("data"), &addr, &args).await;
    assert_eq!(head(blob).await, StatusCode::NOT_FOUND, "the blob is gone, and berth says so");
    let catalog: serde_json::Value =
        client().get(format!("{}/v2/_catalog", berth.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!([]));
    drop(berth);
    assert!(!dir.path().join("data/meta.db").exists(), "no database file in the data directory");
}

/// A rollback to a Berth that reads only files: `berth unpack-small-objects` writes every row out
/// as the file at its key, and the rows go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpacked_small_objects_are_files_at_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let berth = Berth::spawn(dir.path(), &addr, &[]).await;
    let data = bytes::Bytes::from_static(b"a config of a few bytes");
    let digest = common::upstream::push_blob_to(&berth.url, "small/app", data.clone()).await;
    drop(berth);
    let stored = stored_under(dir.path(), "storage/blobs");
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].exists(), "kept as a row, not a file");

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["unpack-small-objects", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("1 small objects"));
    assert_eq!(std::fs::read(&stored[0]).unwrap(), data, "the file at its key");
    let berth = Berth::spawn(dir.path(), &addr, &[]).await;
    let got = client().get(format!("{}/v2/small/app/blobs/{digest}", berth.url)).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap(), data);
}
