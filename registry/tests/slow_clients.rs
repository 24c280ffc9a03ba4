//! Slow and stalled clients cost the registry memory and a socket, never a thread: hundreds of
//! them held open leave every other client answered promptly, and a connection that is never
//! going anywhere is closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::berth::*;
use common::*;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Far above what any request below should take, so a slow shared machine still passes.
const PROMPT: Duration = Duration::from_secs(5);
const STALLED_DOWNLOADS: usize = 600;
const STALLED_UPLOADS: usize = 200;

fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A connection that asks for `path` and then reads nothing (with a tiny receive window, so the
/// server soon has to wait for it).
async fn stalled_download(addr: &str, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr.parse().unwrap()).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    conn
}

/// An upload that announces 10 MiB, sends 1 KiB and then nothing.
async fn stalled_upload(addr: &str, location: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        10 << 20
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[7u8; 1024]).await.unwrap();
    conn
}

async fn prompt<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    match tokio::time::timeout(PROMPT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} took more than {PROMPT:?} (after {:?})", started.elapsed()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_stalled_clients_leave_everyone_else_answered() {
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let berth = Berth::spawn(dir.path(), &addr, &[]).await;
    let url = berth.url.clone();
    let big = content(32 << 20, 1);
    let big_digest = sha256(&big);
    let c = client();
    let pushed = c
        .post(format!("{url}/v2/load/big/blobs/uploads/?digest={big_digest}"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": big_digest, "size": big.len()},
        "layers": [],
    })
    .to_string();
    let put = c
        .put(format!("{url}/v2/load/big/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    let mut held = Vec::with_capacity(STALLED_DOWNLOADS + STALLED_UPLOADS);
    for _ in 0..STALLED_DOWNLOADS {
        held.push(stalled_download(&addr, &format!("/v2/load/big/blobs/{big_digest}")).await);
    }
    for _ in 0..STALLED_UPLOADS {
        let session = c.post(format!("{url}/v2/load/slow/blobs/uploads/")).send().await.unwrap();
        assert_eq!(session.status(), StatusCode::ACCEPTED);
        let location = session.headers()["location"].to_str().unwrap().to_owned();
        held.push(stalled_upload(&addr, &location).await);
    }

    // A fresh client, while every one of them is held open.
    let fresh = client();
    let base = prompt("GET /v2/", fresh.get(format!("{url}/v2/")).send()).await.unwrap();
    assert_eq!(base.status(), StatusCode::OK);
    let m =
        prompt("a manifest GET", fresh.get(format!("{url}/v2/load/big/manifests/v1")).send()).await.unwrap();
    assert_eq!(m.status(), StatusCode::OK);
    let small = content(4096, 2);
    let small_digest = sha256(&small);
    let push = prompt(
        "a small blob push",
        fresh.post(format!("{url}/v2/load/fresh/blobs/uploads/?digest={small_digest}")).body(small).send(),
    )
    .await
    .unwrap();
    assert_eq!(push.status(), StatusCode::CREATED);
    let head = prompt("a HEAD", fresh.head(format!("{url}/v2/load/fresh/blobs/{small_digest}")).send())
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    // The stalled clients leave; the big blob is whole.
    drop(held);
    let back = client().get(format!("{url}/v2/load/big/blobs/{big_digest}")).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    assert_eq!(sha256(&back.bytes().await.unwrap()), big_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_nobody_reads_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let berth = Berth::spawn_with_config(dir.path(), &addr, "limits: {body_idle_timeout: 1s}\n").await;
    let big = content(16 << 20, 3);
    let digest = sha256(&big);
    let pushed = client()
        .post(format!("{}/v2/idle/blobs/uploads/?digest={digest}", berth.url))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let mut conn = stalled_download(&addr, &format!("/v2/idle/blobs/{digest}")).await;
    // Take nothing until the server says it gave up on a stalled connection...
    let cut = eventually(Duration::from_secs(20), || async {
        berth.metric("berth_connections_stalled_total").await >= 1.0
    })
    .await;
    assert!(cut, "the server counted a stalled connection");
    // ...then read: what arrives is cut short, not the whole blob.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection ended instead of waiting for us");
    assert!(got.len() < 16 << 20, "the server cut the response short ({} bytes)", got.len());
}

/// Whether the server closes `conn` (EOF or reset) within `within`, reading whatever it sends.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(within, conn.read_to_end(&mut sink)).await.is_ok()
}

/// Speaks HTTP/2 on `conn` without ever opening a stream: its preface, then a PING every 200 ms,
/// answering the server's PINGs as a client must (with `answer`); returns the type of every frame
/// the server sent once it closes the connection.
async fn pinging_h2(conn: TcpStream, answer: bool) -> Vec<u8> {
    let (mut reader, mut writer) = conn.into_split();
    // The preface, and an empty SETTINGS frame (length 0, type 4).
    writer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let (mut got, mut kinds) = (Vec::new(), Vec::new());
    loop {
        let mut buf = [0u8; 4096];
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return kinds,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                // PING: length 8, type 6, no flags, stream 0, eight bytes of payload.
                let _ = writer.write_all(b"\0\0\x08\x06\0\0\0\0\0berthpin").await;
            }
        }
        while got.len() >= 9 {
            let len = usize::from(got[0]) << 16 | usize::from(got[1]) << 8 | usize::from(got[2]);
            if got.len() < 9 + len {
                break;
            }
            let frame: Vec<u8> = got.drain(..9 + len).collect();
            kinds.push(frame[3]);
            if answer && frame[3] == 6 && frame[4] & 1 == 0 {
                let mut ack = frame;
                ack[4] = 1;
                let _ = writer.write_all(&ack).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_request_in_flight_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let berth = Berth::spawn_with_config(dir.path(), &addr, "limits: {idle_timeout: 1s}\n").await;

    // A socket that never sends a byte would hold one of the connections forever.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut silent, PROMPT).await, "a connection that never sent a request was kept");

    // An HTTP/2 connection that opens no stream, however often it pings, is closed too, and told
    // so with a GOAWAY (a client then knows no request of its was dropped).
    let h2 = TcpStream::connect(&addr).await.unwrap();
    let kinds = prompt("an HTTP/2 connection with nothing but pings closed", pinging_h2(h2, true)).await;
    assert!(kinds.contains(&7), "no GOAWAY among the frames {kinds:?}");
    // One that never answers the GOAWAY's ping (so it never finishes) is cut a few seconds on.
    let h2 = TcpStream::connect(&addr).await.unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(20), pinging_h2(h2, false)).await;
    assert!(cut.is_ok(), "an HTTP/2 connection that ignored the GOAWAY was kept");

    // A request longer than the idle timeout is not cut: an upload whose body trickles in for
    // three seconds.
    let session = client().post(format!("{}/v2/idle/slow/blobs/uploads/", berth.url)).send().await.unwrap();
    let location = session.headers()["location"].to_str().unwrap().to_owned();
    let body = content(30, 4);
    let mut upload = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(3) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        upload.write_all(chunk).await.unwrap();
    }
    let mut answer = [0u8; 12];
    prompt("the trickled upload's answer", upload.read_exact(&mut answer)).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 202", "{}", String::from_utf8_lossy(&answer));

    // A connection that keeps asking stays open: each request ended starts the clock again.
    let mut steady = TcpStream::connect(&addr).await.unwrap();
    for _ in 0..6 {
        let get = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        steady.write_all(get.as_bytes()).await.unwrap();
        let mut status = [0u8; 15];
        prompt("a GET on a steady connection", steady.read_exact(&mut status)).await.unwrap();
        assert_eq!(&status, b"HTTP/1.1 200 OK");
        let mut rest = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(100), steady.read(&mut rest)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(berth.metric("berth_connections_idle_closed_total").await >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_told_so_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let berth = Berth::spawn_with_config(dir.path(), &addr, "limits: {max_connections: 8}\n").await;
    // Hold connections until one more is refused (whatever spawn's probes left open counts too).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no connection was refused");
        let mut extra = TcpStream::connect(&addr).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), extra.read_to_end(&mut got)).await;
        if String::from_utf8_lossy(&got).starts_with("HTTP/1.1 503") {
            break;
        }
        held.push(extra);
    }
    assert!(held.len() <= 8, "at most max_connections were let in");
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(PROMPT, extra.read_to_end(&mut got)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503") && text.contains("Retry-After: 1"), "{text}");
    assert!(text.contains("\"code\":\"UNAVAILABLE\""), "{text}");
    // Room again once they leave.
    drop(held);
    let back = eventually(Duration::from_secs(20), || async {
        client().get(format!("{}/v2/", berth.url)).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(back);
}

/// A berth serving its metrics on a listener of its own (plain HTTP), with `limits`; its address.
async fn with_metrics_listener(dir: &std::path::Path, limits: &str) -> (Berth, String) {
    let metrics = free_addr();
    let yaml = format!("limits: {{{limits}}}\nmetrics: {{listen: \"{metrics}\"}}\n");
    let berth = Berth::spawn_with_config(dir, &free_addr(), &yaml).await;
    let scraped = client().get(format!("http://{metrics}/metrics")).send().await.unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    (berth, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_closes_a_connection_without_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (_berth, metrics) = with_metrics_listener(dir.path(), "idle_timeout: 1s").await;
    let mut silent = TcpStream::connect(&metrics).await.unwrap();
    assert!(closed_within(&mut silent, PROMPT).await, "a connection that never sent a request was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_refuses_connections_past_its_own_bound() {
    // Each socket held open there would otherwise hold one of the process's file descriptors,
    // which the registry's clients, files and database need.
    const OPENED: usize = 80;
    const BOUND: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let (berth, metrics) = with_metrics_listener(dir.path(), "").await;
    let mut held = Vec::new();
    for _ in 0..OPENED {
        held.push(TcpStream::connect(&metrics).await.unwrap());
    }
    let answers = futures_util::future::join_all(held.iter_mut().map(|conn| async move {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(PROMPT, conn.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 503")
    }))
    .await;
    let refused = answers.iter().filter(|&&r| r).count();
    assert!(refused >= OPENED - BOUND, "{refused} of {OPENED} connections refused");
    // The registry's own listener is not touched by them.
    let r = prompt("GET /v2/ meanwhile", client().get(format!("{}/v2/", berth.url)).send()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Eight hundred sockets and a margin: more than the usual soft limit of 1024 leaves.
#[allow(unsafe_code)]
fn raise_open_files() {
    // SAFETY: plain system calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// One request sending for longer than the upload TTL (a large layer over a slow link) keeps its
/// session: a request on it meanwhile finds it in use, not abandoned, and the bytes become the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_sending_for_longer_than_the_ttl_keeps_its_session() {
    use futures_util::StreamExt;
    let ttl = Duration::from_secs(2);
    let s =
        TestServer::with_limits(berth_registry::service::Limits { upload_ttl: ttl, ..Default::default() })
            .await;
    let c = client();
    let loc = start_session(&s, "slow/ttl").await;
    let data = content(64 * 1024, 7);
    // Eight pieces, 0.6 s apart: the one PATCH runs for more than twice the TTL.
    let pieces: Vec<Vec<u8>> = data.chunks(8 * 1024).map(<[u8]>::to_vec).collect();
    let body = futures_util::stream::iter(pieces).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        Ok::<_, std::io::Error>(piece)
    });
    let patch = c.patch(s.url(&loc)).body(reqwest::Body::wrap_stream(body)).send();
    let meanwhile = async {
        tokio::time::sleep(ttl + Duration::from_millis(1500)).await;
        c.get(s.url(&loc)).send().await.unwrap().status()
    };
    let (patched, seen) = tokio::join!(patch, meanwhile);
    assert_eq!(seen, StatusCode::NO_CONTENT, "the session is in use, not abandoned");
    let patched = patched.unwrap();
    assert_eq!(patched.status(), StatusCode::ACCEPTED, "every byte sent was recorded");
    let next = patched.headers()["location"].to_str().unwrap().to_owned();
    let d = sha256(&data);
    let sep = if next.contains('?') { '&' } else { '?' };
    let r = c.put(s.url(&format!("{next}{sep}digest={d}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c.get(s.url(&format!("/v2/slow/ttl/blobs/{d}"))).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..]);
    s.stop().await;
}
