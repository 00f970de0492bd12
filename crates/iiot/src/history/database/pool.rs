//! A small bounded pool of connections: at most `size` open at once, each reused while it
//! stays open, a broken one dropped and replaced on the next use. No connection is opened
//! before it is needed, so a database that is down at start costs nothing until then.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls};

use super::DbError;

/// How long a connection attempt may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to one database.
pub(crate) struct Pool {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

/// A connection taken from the pool; given back when dropped (unless it broke).
pub(crate) struct Conn<'p> {
    client: Option<Client>,
    pool: &'p Pool,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Set at construction, taken only in `drop`.
        self.client
            .as_ref()
            .expect("connection present until dropped")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("connection present until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take()
            && !c.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
    }
}

impl Pool {
    /// A pool of at most `size` connections to `config`'s database.
    pub(crate) fn new(mut config: tokio_postgres::Config, size: usize) -> Pool {
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("iiot");
        Pool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// An open connection: an idle one, or a new one.
    pub(crate) async fn get(&self) -> Result<Conn<'_>, DbError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DbError::Unavailable("the pool is closed".into()))?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(c) => c,
            None => {
                let connect = self.config.connect(NoTls);
                let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| DbError::Unavailable("connecting timed out".into()))?
                    .map_err(DbError::from_pg)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "history database connection closed");
                    }
                });
                client
            }
        };
        Ok(Conn {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }
}
