//! A real PostgreSQL server for tests: the one `BERTH_TEST_POSTGRES_URL` names (a superuser URL
//! without a database), or else one this process starts on loopback from the installed
//! PostgreSQL binaries, once, and which stops when the process exits. Each test gets a database
//! of its own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// A fresh, empty database.
pub struct TestDatabase {
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let base = tokio::task::spawn_blocking(server_url).await.expect("starting PostgreSQL");
        let name = format!("berth_{}", uuid::Uuid::new_v4().simple());
        let admin_url = format!("{base}/postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        // A server that just opened its port may still be starting up.
        let (admin, conn) = loop {
            match tokio_postgres::connect(&admin_url, NoTls).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "test PostgreSQL not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("connecting to the test PostgreSQL at {base}: {e}"),
            }
        };
        let conn = tokio::spawn(conn);
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        drop(admin);
        let _ = conn.await;
        TestDatabase { url: format!("{base}/{name}") }
    }

    /// A plain connection to the database, for a test to look inside; the task drives it.
    pub async fn client(&self) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.expect("connecting");
        (client, tokio::spawn(async move { drop(conn.await) }))
    }
}

/// `postgres://user@host:port`, without a database.
fn server_url() -> String {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var("BERTH_TEST_POSTGRES_URL") {
            Ok(url) => Ok(url.trim_end_matches('/').to_owned()),
            Err(_) => start_server(),
        })
        .clone()
        .unwrap_or_else(|e| panic!("no PostgreSQL for tests: {e}"))
}

/// The newest installed PostgreSQL's program directory.
fn bin_dir() -> Result<PathBuf, String> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e} (install PostgreSQL: apt-get install postgresql)"))?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin).ok_or_else(|| "no PostgreSQL under /usr/lib/postgresql".into())
}

/// Starts a throwaway server. PostgreSQL refuses to run as root, so as root it runs as the
/// `postgres` user the package creates. A shell between us and the server stops it and removes
/// its directory when our end of its stdin closes, that is when this process exits.
fn start_server() -> Result<String, String> {
    let bin = bin_dir()?;
    let dir = std::env::temp_dir().join(format!("berth-test-pg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The directory is ours: its owner is who we run as.
    let as_root =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&dir).map_err(|e| e.to_string())?) == 0;
    if as_root {
        let status = Command::new("chown").arg("postgres:postgres").arg(&dir).status();
        if !status.is_ok_and(|s| s.success()) {
            return Err("as root, the server must run as the user postgres, and chown to it failed".into());
        }
    }
    let port = berth_core::ports::free_port().map_err(|e| e.to_string())?;
    let data = dir.join("data");
    // TLS on, with a certificate for 127.0.0.1 from a CA of its own ([`server_ca`]): clients
    // that prefer TLS (berth's default) get it, and tests can verify the server.
    let script = format!(
        "set -e
         '{bin}/initdb' -D '{data}' -U berth -A trust -E UTF8 --no-sync >'{dir}/initdb.log' 2>&1
         cd '{dir}'
         printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' >server.ext
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
            -subj /CN=berth-test-ca -keyout ca.key -out ca.crt >openssl.log 2>&1
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
            -keyout server.key -out server.csr >>openssl.log 2>&1
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
            -extfile server.ext -out server.crt >>openssl.log 2>&1
         chmod 600 server.key ca.key
         chmod 644 ca.crt
         '{bin}/postgres' -D '{data}' -h 127.0.0.1 -p {port} -k '{dir}' -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
            -c ssl=on -c ssl_cert_file='{dir}/server.crt' -c ssl_key_file='{dir}/server.key' \
            >'{dir}/server.log' 2>&1 &
         pid=$!
         read _ || true
         kill -INT $pid; wait $pid || true
         rm -rf '{dir}'",
        bin = bin.display(),
        data = data.display(),
        dir = dir.display(),
    );
    let mut cmd = if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting PostgreSQL: {e}"))?;
    // The stdin pipe lives as long as the process: leaked on purpose.
    let child: &'static mut Child = Box::leak(Box::new(child));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default()
                + &std::fs::read_to_string(dir.join("openssl.log")).unwrap_or_default()
                + &std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("PostgreSQL exited ({status}): {log}"));
        }
        if Instant::now() > deadline {
            return Err(format!("PostgreSQL did not listen on port {port} within a minute"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = SERVER_CA.set(dir.join("ca.crt"));
    Ok(format!("postgres://berth@127.0.0.1:{port}"))
}

static SERVER_CA: OnceLock<PathBuf> = OnceLock::new();

/// The CA of the test server's TLS certificate, when this process started the server.
pub fn server_ca() -> Option<PathBuf> {
    SERVER_CA.get().cloned()
}
