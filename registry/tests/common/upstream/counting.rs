//! A reverse proxy in front of an upstream that counts what passes and misbehaves on demand.

use super::*;

/// One request the counting proxy passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Whether the request carried an `Authorization` header.
    pub authorized: bool,
}

/// A reverse proxy in front of an upstream: counts requests and can misbehave on demand.
pub struct CountingProxy {
    pub url: String,
    pub shared: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

pub struct ProxyState {
    upstream: String,
    seen: Mutex<Vec<Seen>>,
    /// Flip one byte in every blob and manifest body.
    pub corrupt: AtomicBool,
    /// When set, blob bodies stop after this many bytes until `release` is notified.
    pub hold_after: AtomicU64,
    pub release: Notify,
    /// Bytes of blob bodies passed on so far.
    pub blob_bytes_sent: AtomicU64,
    /// Answer this many of the next requests with 429 and `Retry-After: 1`.
    pub throttle: AtomicU64,
    /// Answer blob GETs with a 307 to this base URL (another host), as registries redirect to
    /// blob storage.
    pub redirect_blobs: Mutex<Option<String>>,
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> CountingProxy {
        let shared = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            seen: Mutex::new(vec![]),
            corrupt: AtomicBool::new(false),
            hold_after: AtomicU64::new(u64::MAX),
            release: Notify::new(),
            blob_bytes_sent: AtomicU64::new(0),
            throttle: AtomicU64::new(0),
            redirect_blobs: Mutex::new(None),
        });
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingProxy { url: format!("http://{addr}"), shared, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests with this method had a path containing `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method && s.path.contains(part)).count()
    }

    pub fn reset(&self) {
        self.shared.seen.lock().unwrap().clear();
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(st): State<Arc<ProxyState>>, req: Request) -> Response {
    let method = req.method().clone();
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let authorized = req.headers().contains_key("authorization");
    st.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path_and_query.clone(),
        authorized,
    });
    if st.throttle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Response::builder().status(429).header("retry-after", "1").body(Body::empty()).unwrap();
    }
    let redirect = st.redirect_blobs.lock().unwrap().clone();
    if let Some(to) = redirect.filter(|_| method == "GET" && path_and_query.contains("/blobs/sha256:")) {
        let location = format!("{to}{path_and_query}");
        return Response::builder().status(307).header("location", location).body(Body::empty()).unwrap();
    }
    let mut out = client().request(method, format!("{}{path_and_query}", st.upstream));
    for (name, value) in req.headers() {
        if name != "host" {
            out = out.header(name, value);
        }
    }
    let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap_or_default();
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(_) => return Response::builder().status(502).body(Body::empty()).unwrap(),
    };
    let is_blob = path_and_query.contains("/blobs/sha256:") && resp.status() == StatusCode::OK;
    let is_manifest = path_and_query.contains("/manifests/") && resp.status() == StatusCode::OK;
    let mut builder = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    let corrupt = st.corrupt.load(Ordering::SeqCst);
    if is_manifest && corrupt {
        let mut bytes = resp.bytes().await.unwrap_or_default().to_vec();
        if let Some(b) = bytes.last_mut() {
            *b ^= 0x01;
        }
        return builder.body(Body::from(bytes)).unwrap();
    }
    if !is_blob {
        return builder.body(Body::from_stream(resp.bytes_stream())).unwrap();
    }
    let state = st.clone();
    let init = (resp.bytes_stream(), 0u64, false, state, None::<Bytes>);
    let stream =
        futures_util::stream::unfold(init, move |(mut inner, mut sent, mut flipped, st, held)| async move {
            if let Some(rest) = held {
                // The part after the hold point goes out once the test releases it.
                st.release.notified().await;
                sent += rest.len() as u64;
                st.blob_bytes_sent.fetch_add(rest.len() as u64, Ordering::SeqCst);
                return Some((Ok::<_, std::io::Error>(rest), (inner, sent, flipped, st, None)));
            }
            let mut chunk: Bytes = match inner.next().await? {
                Ok(c) => c,
                Err(e) => return Some((Err(std::io::Error::other(e)), (inner, sent, flipped, st, None))),
            };
            if corrupt && !flipped && !chunk.is_empty() {
                let mut v = chunk.to_vec();
                v[0] ^= 0x01;
                chunk = Bytes::from(v);
                flipped = true;
            }
            let hold = st.hold_after.load(Ordering::SeqCst);
            let mut rest = None;
            if sent < hold && sent + chunk.len() as u64 >= hold {
                rest = Some(chunk.split_off((hold - sent) as usize));
            }
            sent += chunk.len() as u64;
            st.blob_bytes_sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Some((Ok(chunk), (inner, sent, flipped, st, rest)))
        });
    builder.body(Body::from_stream(stream)).unwrap()
}
