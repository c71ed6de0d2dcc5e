//! What the tests that run the real `answers` binary share: processes killed when dropped, a
//! service's environment on a fresh database, question load, and the checks that the read models
//! converged and equal a rebuild.
// Each test file uses a part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A started `answers` process, killed with SIGKILL when dropped: a failing test leaves no
/// process behind holding database connections.
pub struct Process(pub Child);

impl Process {
    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends SIGTERM (a graceful stop) and returns at once.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM sent");
    }

    /// Waits at most `within` for the process to end by itself; its exit status, or `None` if
    /// it is still running.
    pub async fn exited(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().expect("the process can be waited for") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Service {
    pub env: Vec<(String, String)>,
    pub port: u16,
}

#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Embedded,
    Kafka,
}

impl Service {
    pub fn new(db: &str, transport: Transport) -> Self {
        let port = free_port();
        let suffix = &db[db.len() - 12..];
        let transport = match transport {
            Transport::Embedded => vec![
                ("APP__KAFKA__ENABLED", "false".to_string()),
                ("APP__EMBEDDED__ENABLED", "true".into()),
            ],
            Transport::Kafka => vec![
                ("APP__KAFKA__ENABLED", "true".to_string()),
                ("APP__EMBEDDED__ENABLED", "false".into()),
                (
                    "APP__KAFKA__BOOTSTRAP_SERVERS",
                    std::env::var("KAFKA_BOOTSTRAP_SERVERS")
                        .unwrap_or_else(|_| "127.0.0.1:9092".into()),
                ),
                ("APP__KAFKA__TOPIC_PREFIX", format!("t{suffix}")),
                ("APP__KAFKA__CONSUMER_GROUP", format!("g{suffix}")),
            ],
        };
        let env = transport
            .into_iter()
            .chain([
                ("APP__DATABASE__URL", format!("{}/{db}", server_url())),
                ("APP__SERVER__PORT", port.to_string()),
                ("APP__RATE_LIMITS__ENABLED", "false".into()),
                // A question whose answer never came (the process died between asking and
                // recording) is failed by the sweeper after this long.
                ("APP__ENGINE__SWEEP_AFTER_MS", "1500".into()),
                ("APP__KAPA__TOTAL_TIMEOUT_MS", "1000".into()),
                ("APP__ENGINE__SWEEP_INTERVAL_MS", "200".into()),
                ("APP__HEALTH__STALL_AFTER_MS", "2000".into()),
                ("APP__LOG__FILTER", "warn".into()),
            ])
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Self { env, port }
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_answers"));
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn start(&self) -> Process {
        self.start_with(&[], &[])
    }

    /// The binary with `args` and extra environment `env`.
    /// A subcommand (`relay`, `project`) serves its health and metrics on a port of its own
    /// (any free one, unless `env` names one).
    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Process {
        let own_port = (!args.is_empty()).then_some(("APP__SERVER__PORT", "0"));
        Process(
            self.command()
                .args(args)
                .envs(own_port)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                // `TEST_LOG=1` shows the processes' logs.
                .stderr(if std::env::var_os("TEST_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
                .expect("the service starts"),
        )
    }

    pub fn env(&self, key: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    pub fn token(&self) -> String {
        self.token_for("acme", "admin", "alice")
    }

    /// A development token for `user` with `role` in `tenant`.
    pub fn token_for(&self, tenant: &str, role: &str, user: &str) -> String {
        let out = self
            .command()
            .args(["token", "--tenant", tenant, "--role", role, "--user", user])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Asks questions `numbers` one after another (each must be accepted). Owns what it needs,
    /// so it can run as a task of its own.
    pub fn ask(
        &self,
        client: &reqwest::Client,
        token: &str,
        numbers: std::ops::Range<usize>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (client, token, address) = (client.clone(), token.to_string(), self.address());
        async move {
            for i in numbers {
                let question = format!("How do I set up integration {i}?");
                let r = send_question(&client, &address, &token, question)
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        }
    }

    /// Creates the token's tenant.
    pub async fn create_tenant(&self, client: &reqwest::Client, token: &str) {
        let created = client
            .post(format!("{}/v1/tenant", self.address()))
            .bearer_auth(token)
            .json(&json!({"name": "Acme"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }

    pub async fn ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = client
                .get(format!("{}/health/ready", self.address()))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the service did not become ready");
    }
}

/// A fresh database's name, the service for it on `transport`, a client and an Admin's token.
pub fn set_up(transport: Transport) -> (String, Service, reqwest::Client, String) {
    let db = format!("answers_test_{}", uuid::Uuid::new_v4().simple());
    let service = Service::new(&db, transport);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = service.token();
    assert!(!token.is_empty());
    (db, service, client, token)
}

pub async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// How far the store and the conversations projection are.
pub struct Progress {
    /// Questions asked.
    pub asked: i64,
    /// Questions answered, failed or blocked.
    pub settled: i64,
    /// Conversation events stored.
    pub conversation_events: i64,
    /// Conversation events the projection applied (never more than stored: none twice).
    pub applied: i64,
}

pub async fn progress(pool: &PgPool) -> Progress {
    let p = Progress {
        asked: scalar(
            pool,
            "SELECT count(*) FROM events WHERE event_type = 'QuestionAsked'",
        )
        .await,
        settled: scalar(
            pool,
            "SELECT count(*) FROM events WHERE event_type IN ('AnswerRecorded', 'AnswerFailed', 'QuestionBlocked')",
        )
        .await,
        conversation_events: scalar(
            pool,
            "SELECT count(*) FROM events WHERE aggregate_type = 'conversation'",
        )
        .await,
        applied: scalar(
            pool,
            "SELECT coalesce((SELECT applied_events FROM projection_status WHERE projection = 'conversations'), 0)",
        )
        .await,
    };
    assert!(
        p.applied <= p.conversation_events,
        "applied {} > stored {}",
        p.applied,
        p.conversation_events
    );
    p
}

/// Whether, within 60 s, every conversation event is applied and all `asked` questions are
/// settled.
pub async fn converges(pool: &PgPool, asked: i64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = progress(pool).await;
        if p.applied == p.conversation_events && p.settled == asked && p.asked == asked {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The conversations read model, row by row.
pub async fn conversations_model(pool: &PgPool) -> Vec<serde_json::Value> {
    sqlx::query_scalar(
        "SELECT to_jsonb(r) FROM rm_conversations r ORDER BY tenant_id, conversation_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Rebuilds the conversations projection from the store and compares it with `live`.
pub async fn assert_equals_a_rebuild(pool: &PgPool, live: &[serde_json::Value]) {
    projections::rebuild(
        pool,
        &projections::Folded(projections::conversations::Conversations),
    )
    .await
    .unwrap();
    assert_eq!(
        conversations_model(pool).await,
        live,
        "the live model equals a rebuild"
    );
}

/// Drops the test's database (its connections too).
pub async fn drop_database(db: &str) {
    let admin = PgPool::connect(&format!("{}/postgres", server_url()))
        .await
        .unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(&admin)
        .await;
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one question to the service at `address` (a load client's request).
pub async fn send_question(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    question: String,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{address}/v1/conversations"))
        .bearer_auth(token)
        .json(&json!({ "question": question }))
        .send()
        .await
}
