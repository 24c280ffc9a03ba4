//! Blob uploads: monolithic, chunked (out of order, resumed), streamed, refused early, cancelled,
//! surviving a restart, and bounded in chunks.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_then_put_and_empty_blob() {
    let s = TestServer::start().await;
    let c = client();
    let r = c.post(s.url("/v2/r/b/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(r.headers().contains_key("docker-upload-uuid"));
    assert!(r.headers().contains_key("oci-chunk-min-length"));
    let data = b"post then put".to_vec();
    let d = sha256(&data);
    let r = c.put(s.url(&format!("{loc}?digest={d}"))).body(data).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], format!("/v2/r/b/blobs/{d}").as_str());

    let empty = sha256(b"");
    let r = c.post(s.url(&format!("/v2/r/b/blobs/uploads/?digest={empty}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = send(Method::HEAD, s.url(&format!("/v2/r/b/blobs/{empty}"))).await;
    assert_eq!(r.headers()["content-length"], "0");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_with_out_of_order_chunk_and_resume() {
    let s = TestServer::start().await;
    let c = client();
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 256) as u8).collect();
    let loc = start_session(&s, "r/c").await;
    let patch = |start: usize, end: usize| patch_chunk(&s, &loc, start, &data[start..end]);
    let r = patch(0, 100).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-99");
    let r = patch(150, 200).await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "a gap is out of order");
    assert_eq!(r.headers()["range"], "0-99", "the 416 says where to resume");
    let r = patch(50, 100).await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "an overlap is out of order");

    let status = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(status.headers()["range"], "0-99");
    assert!(status.headers().contains_key("location"));

    assert_eq!(patch(100, 200).await.unwrap().status(), StatusCode::ACCEPTED);
    // The last chunk comes with the closing PUT.
    let d = sha256(&data);
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .header("content-range", "200-299")
        .body(data[200..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let back = c.get(s.url(&format!("/v2/r/c/blobs/{d}"))).send().await.unwrap();
    assert_eq!(back.bytes().await.unwrap().as_ref(), data.as_slice());
    s.stop().await;
}

/// A refusal sent before the body arrived: the connection cannot be reused (its body is still on
/// the way), so the response must say `Connection: close` — else a client pools it and its next
/// request, a POST it will not retry, meets a closed socket. A body read to its end keeps the
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_before_the_body_closes_the_connection_and_says_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let loc = start_session(&s, "r/unread").await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = |range: &str, len: usize| {
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: {range}\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    async fn response(conn: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut b = [0u8; 1024];
            let n = conn.read(&mut b).await.unwrap();
            assert!(n > 0, "the connection closed before a response");
            buf.extend_from_slice(&b[..n]);
        }
        String::from_utf8_lossy(&buf).to_ascii_lowercase()
    }
    // In order, body sent: 202, and the connection stays open.
    conn.write_all(format!("{}{}", head("0-9", 10), "0123456789").as_bytes()).await.unwrap();
    let first = response(&mut conn).await;
    assert!(first.starts_with("http/1.1 202"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");
    // Out of order, head only: 416 at once, with `Connection: close`, and the socket closes.
    conn.write_all(head("50-59", 10).as_bytes()).await.unwrap();
    let refused = response(&mut conn).await;
    assert!(refused.starts_with("http/1.1 416"), "{refused}");
    assert!(refused.contains("connection: close"), "the 416 does not say the connection ends: {refused}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), conn.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_))), "the server closes the connection");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_patch_without_content_range() {
    let s = TestServer::start().await;
    let c = client();
    let loc = start_session(&s, "r/d").await;
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = (0..64).map(|i| Ok(vec![i as u8; 65_537])).collect();
    let all: Vec<u8> = parts.iter().flat_map(|p| p.as_ref().unwrap().clone()).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(parts));
    let r = c.patch(s.url(&loc)).body(body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], format!("0-{}", all.len() - 1).as_str());
    let d = sha256(&all);
    let r = c.put(s.url(&format!("{loc}?digest={d}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_upload() {
    let s = TestServer::start().await;
    let c = client();
    let loc = start_session(&s, "r/e").await;
    c.patch(s.url(&loc)).body(vec![1u8; 10]).send().await.unwrap();
    assert_eq!(c.delete(s.url(&loc)).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(s.stored_under("storage/uploads"), Vec::<std::path::PathBuf>::new());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(dir.path(), Limits::default()).await;
    let c = client();
    let loc = start_session(&s, "r/k").await;
    let r = c.patch(s.url(&loc)).header("content-range", "0-4").body(b"first".to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    s.stop().await;

    let s = TestServer::start_in(dir.path(), Limits::default()).await;
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-4");
    let d = sha256(b"first-second");
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .header("content-range", "5-11")
        .body(b"-second".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "finished after the restart, hash rebuilt from storage");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_session_holds_a_bounded_number_of_chunks() {
    let s = TestServer::with_limits(Limits { max_upload_chunks: 3, ..Limits::default() }).await;
    let c = client();
    let data: Vec<u8> = (0..40u32).map(|i| (i * 13 % 256) as u8).collect();
    let loc = start_session(&s, "r/chunks").await;
    let patch = |start: usize, end: usize| patch_chunk(&s, &loc, start, &data[start..end]);
    for i in 0..3 {
        assert_eq!(patch(i * 10, i * 10 + 10).await.unwrap().status(), StatusCode::ACCEPTED);
    }
    // One chunk too many: refused with the spec's code and a reason, and nothing changes.
    let r = patch(30, 40).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("3 chunks"), "{v}");
    let status = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(status.headers()["range"], "0-29");
    // The session still finishes, with the last bytes in the closing PUT.
    let d = sha256(&data);
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .header("content-range", "30-39")
        .body(data[30..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the closing chunk counts too");
    let r = c.put(s.url(&format!("{loc}?digest={}", sha256(&data[..30])))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "what it holds can be finished");
    s.stop().await;
}
