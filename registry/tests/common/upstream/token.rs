//! A token service in the Docker token spec's shape, for upstreams that ask for Bearer tokens.

use super::*;

pub const TOKEN_SERVICE: &str = "upstream-registry";
pub const TOKEN_ISSUER: &str = "berth-test-token-issuer";

/// A token service in the style of Docker Hub's `auth.docker.io`: checks Basic credentials and
/// issues EdDSA-signed JWTs with `access` claims for the scopes asked for. Distribution trusts
/// its certificate; the key ID is the key's JWK thumbprint, as Distribution looks keys up.
pub struct TokenService {
    pub url: String,
    pub cert_pem: String,
    pub shared: Arc<TokenState>,
    task: tokio::task::JoinHandle<()>,
}

pub struct TokenState {
    user: String,
    password: String,
    key: rcgen::KeyPair,
    kid: String,
    /// The `scope` of every token issued.
    pub issued: Mutex<Vec<String>>,
    pub refused: AtomicU64,
}

impl TokenService {
    pub async fn start(user: &str, password: &str) -> TokenService {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert_pem = rcgen::CertificateParams::new(vec!["token-issuer".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let jwk = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(key.public_key_raw()));
        let kid = b64(&sha2::Sha256::digest(jwk.as_bytes()));
        let shared = Arc::new(TokenState {
            user: user.into(),
            password: password.into(),
            key,
            kid,
            issued: Mutex::new(vec![]),
            refused: AtomicU64::new(0),
        });
        let app = axum::Router::new().route("/token", axum::routing::get(issue)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenService { url, cert_pem, shared, task }
    }

    pub fn auth(&self) -> Auth {
        Auth::Token { realm: format!("{}/token", self.url), cert_pem: self.cert_pem.clone() }
    }

    pub fn issued(&self) -> Vec<String> {
        self.shared.issued.lock().unwrap().clone()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

use sha2::Digest as _;

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

async fn issue(
    State(st): State<Arc<TokenState>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
) -> Response {
    use base64::Engine as _;
    use rcgen::SigningKey as _;
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    if given != Some(format!("{}:{}", st.user, st.password)) {
        st.refused.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"details":"incorrect username or password"}"#))
            .unwrap();
    }
    let scopes: Vec<String> = url_pairs(query.as_deref().unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v)
        .collect();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": st.kid});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": st.user, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input =
        format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = st.key.sign(signing_input.as_bytes()).unwrap();
    let token = format!("{signing_input}.{}", b64(&signature));
    st.issued.lock().unwrap().push(scopes.join(" "));
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
    Response::builder().header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
}

/// `a=b&c=d` with percent-decoding.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
