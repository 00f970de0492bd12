//! A small bounded pool of connections: at most `size` open at once, each reused while it
//! stays open, a broken one dropped and replaced on the next use. No connection is opened
//! before it is needed, so a database that is down at start costs nothing until then. Each
//! connection keeps the statements prepared on it ([`Conn::prepare_cached`]): the batch insert
//! is parsed and planned once per connection, not once per batch.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls, Statement};

use super::DbError;

/// How long a connection attempt may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to one database.
pub(crate) struct Pool {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Pooled>>,
    permits: Arc<Semaphore>,
}

/// An open connection with the statements prepared on it (a handful: one per SQL text).
struct Pooled {
    client: Client,
    statements: Vec<(&'static str, Statement)>,
}

/// A connection taken from the pool; given back when dropped (unless it broke).
pub(crate) struct Conn<'p> {
    client: Option<Pooled>,
    pool: &'p Pool,
    _permit: OwnedSemaphorePermit,
}

impl Conn<'_> {
    /// `sql` prepared on this connection: prepared once, then reused for as long as the
    /// connection lives.
    pub(crate) async fn prepare_cached(&mut self, sql: &'static str) -> Result<Statement, DbError> {
        let pooled = self
            .client
            .as_mut()
            .expect("connection present until dropped");
        if let Some((_, st)) = pooled.statements.iter().find(|(s, _)| *s == sql) {
            return Ok(st.clone());
        }
        let st = pooled.client.prepare(sql).await.map_err(DbError::from_pg)?;
        pooled.statements.push((sql, st.clone()));
        Ok(st)
    }

    /// Drops the statements prepared on this connection (after an error: they are prepared
    /// again on next use).
    pub(crate) fn forget_statements(&mut self) {
        if let Some(pooled) = self.client.as_mut() {
            pooled.statements.clear();
        }
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Set at construction, taken only in `drop`.
        &self
            .client
            .as_ref()
            .expect("connection present until dropped")
            .client
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self
            .client
            .as_mut()
            .expect("connection present until dropped")
            .client
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take()
            && !c.client.is_closed()
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
            idle.retain(|c| !c.client.is_closed());
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
                Pooled {
                    client,
                    statements: Vec::new(),
                }
            }
        };
        Ok(Conn {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }
}
