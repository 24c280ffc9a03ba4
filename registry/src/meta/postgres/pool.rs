//! The connection pool, and its replacement when the database URL changes (a rotated password
//! in a mounted Secret): requests take connections from the new pool as soon as one of them
//! connected; connections of the old pool finish what they are doing and close.

use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Notification};

use super::errors::db_error;
use super::migrate;
use super::tls::Connector;
use crate::meta::{MetaError, Result};

/// How long a request waits for a pooled connection, or for a new one to be made.
const CONNECTION_WAIT: Duration = Duration::from_secs(5);
/// A pooled connection idle for this long is asked a trivial query before a request gets it.
const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(1);

pub(super) struct SharedPool {
    current: RwLock<(Pool, String)>,
    max_connections: usize,
    tls: Connector,
}

impl SharedPool {
    pub(super) fn new(url: &str, max_connections: usize, tls: Connector) -> Result<SharedPool> {
        let pool = build(url, max_connections, &tls)?;
        Ok(SharedPool { current: RwLock::new((pool, url.to_owned())), max_connections, tls })
    }

    /// The pool in use (a handle: cheap to clone).
    pub(super) fn get(&self) -> Result<Pool> {
        self.current.read().map(|c| c.0.clone()).map_err(|_| poisoned())
    }

    /// The URL in use.
    pub(super) fn url(&self) -> Result<String> {
        self.current.read().map(|c| c.1.clone()).map_err(|_| poisoned())
    }

    /// One connection outside the pool, to the URL in use (returned too, to tell when it
    /// changes), whose notifications arrive on the receiver; the receiver ends when the
    /// connection does.
    pub(super) async fn connect_listener(
        &self,
        application_name: &str,
    ) -> Result<(String, tokio_postgres::Client, mpsc::UnboundedReceiver<Notification>)> {
        let url = self.url()?;
        let config = config(&url, application_name)?;
        let (client, mut connection) = config.connect(self.tls.clone()).await.map_err(db_error)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "database listening connection ended");
                        return;
                    }
                }
            }
        });
        Ok((url, client, rx))
    }

    /// Uses `url` from now on, once a connection to it works; an unchanged URL changes nothing.
    /// On failure the pool in use stays.
    pub(super) async fn replace(&self, url: &str) -> Result<bool> {
        if self.current.read().map_err(|_| poisoned())?.1 == url {
            return Ok(false);
        }
        let pool = build(url, self.max_connections, &self.tls)?;
        drop(pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => db_error(e),
            e => MetaError::Unavailable(e.to_string()),
        })?);
        *self.current.write().map_err(|_| poisoned())? = (pool, url.to_owned());
        Ok(true)
    }
}

fn poisoned() -> MetaError {
    MetaError::Db("database pool lock poisoned".into())
}

/// A connection from `pool`, or why none could be had in time.
pub(super) async fn client(pool: &SharedPool) -> Result<deadpool_postgres::Object> {
    pool.get()?.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            MetaError::Unavailable("no database connection could be had in time".into())
        }
        e => MetaError::Unavailable(e.to_string()),
    })
}

/// The settings every connection to `url` for `purpose` is made with: its name says which
/// schema this code knows ([`migrate::session_name`]), then the purpose and any name the URL gave.
fn config(url: &str, purpose: &str) -> Result<tokio_postgres::Config> {
    // The parse error never quotes the URL, which may hold a password.
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| MetaError::Db(format!("the database URL does not parse: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECTION_WAIT);
    }
    let name = migrate::session_name(&[purpose, config.get_application_name().unwrap_or_default()]);
    config.application_name(&name);
    Ok(config)
}

fn build(url: &str, max_connections: usize, tls: &Connector) -> Result<Pool> {
    let config = config(url, "")?;
    // A connection the server closed is dropped when it is taken (`Fast` checks that). One idle
    // for a while is also asked an empty query first, so a database restart (or a connection
    // silently cut) costs no request an error; one in steady use is not, since that round trip
    // per request doubled the database's work for a one-query request.
    let manager =
        Manager::from_config(config, tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .pre_recycle(Hook::async_fn(|client, metrics| {
            let idle = metrics.last_used() >= VERIFY_AFTER_IDLE;
            Box::pin(async move {
                if idle {
                    // Bounded like a recycle: a connection cut without a word answers nothing.
                    match tokio::time::timeout(CONNECTION_WAIT, client.simple_query("")).await {
                        Ok(r) => drop(r.map_err(HookError::Backend)?),
                        Err(_) => return Err(HookError::message("an idle connection did not answer")),
                    }
                }
                Ok(())
            })
        }))
        .max_size(max_connections.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECTION_WAIT))
        .create_timeout(Some(CONNECTION_WAIT))
        .recycle_timeout(Some(CONNECTION_WAIT))
        .build()
        .map_err(|e| MetaError::Db(format!("database pool: {e}")))
}

/// Re-reads `file` every `every` for as long as `pool` lives, and switches to the URL it holds
/// when that changes (and works).
pub(super) fn watch(pool: &Arc<SharedPool>, file: PathBuf, every: Duration) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let weak: Weak<SharedPool> = Arc::downgrade(pool);
    rt.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(pool) = weak.upgrade() else { return };
            let path = file.clone();
            let url = match tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await {
                Ok(Ok(url)) => url,
                Ok(Err(e)) => {
                    tracing::warn!(file = %file.display(), error = %e, "database URL not re-read; keeping the last");
                    continue;
                }
                Err(_) => continue,
            };
            match pool.replace(url.trim()).await {
                Ok(true) => tracing::info!("the database URL changed; new connections use it"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "the new database URL does not work; keeping the last"),
            }
        }
    });
}
