//! One connection to Redis, shared by its users (the rate limiter, the read cache): opened
//! lazily, so the service starts and serves without Redis; after a failure, tried again at most
//! once a second, so a Redis outage costs a request nothing but a lookup of this state.
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

pub struct RedisLink {
    client: redis::Client,
    timeout: Duration,
    /// The open connection, or when the last attempt failed.
    connection: tokio::sync::Mutex<(Option<ConnectionManager>, Option<Instant>)>,
}

impl RedisLink {
    /// Checks the URL; connects on first use.
    pub fn new(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            timeout,
            connection: tokio::sync::Mutex::new((None, None)),
        })
    }

    /// The bound on every command and on connecting.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connection, or `None` while Redis is unreachable (one attempt a second at most).
    pub async fn connection(&self) -> Option<ConnectionManager> {
        let mut guard = self.connection.lock().await;
        if let Some(c) = &guard.0 {
            return Some(c.clone());
        }
        if guard
            .1
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(0);
        match tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        {
            Ok(Ok(c)) => {
                *guard = (Some(c.clone()), None);
                Some(c)
            }
            _ => {
                guard.1 = Some(Instant::now());
                None
            }
        }
    }

    /// Runs `cmd` within the timeout: `None` when Redis is unreachable, slow or refuses it (the
    /// connection is then dropped, to be opened again later).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut connection)).await {
            Ok(Ok(value)) => Some(value),
            _ => {
                self.forget_connection().await;
                None
            }
        }
    }

    /// Drops the connection after a failed command: the next use reconnects (after a second).
    pub async fn forget_connection(&self) {
        let mut guard = self.connection.lock().await;
        *guard = (None, Some(Instant::now()));
    }
}
