//! The test harness: starts the production application (`Application::build`) on port 0
//! against a database of its own, and talks to it over HTTP like any client.
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use answers_api::auth::JwtKeys;
use answers_api::{Application, Settings};
use async_trait::async_trait;
use domain::engine::{AnswerEngine, AnswerRequest, ChunkSink, EngineAnswer, EngineFailure};
use domain::Role;
use reqwest::{Method, Response};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub mod idp;
pub mod logs;

/// Where tests create their databases; `TEST_DATABASE_URL` overrides it.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub struct TestApp {
    pub address: String,
    /// The owner's pool (sees every tenant).
    pub pool: PgPool,
    /// The API's pool, held to row-level security.
    pub tenant_pool: event_store::TenantPool,
    pub client: reqwest::Client,
    pub keys: JwtKeys,
    pub settings: Settings,
    /// The platform operator credential this app was configured with.
    pub platform_token: String,
    server: actix_web::dev::ServerHandle,
    running: std::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
    /// Asks the application for a graceful stop, as SIGTERM or SIGINT would.
    signal: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<shutdown::Signal>>>,
}

/// Settings for a fresh, uniquely named database and a free port.
pub fn test_settings() -> Settings {
    let mut settings = Settings::load(None).expect("default settings load");
    let db = format!("answers_test_{}", Uuid::new_v4().simple());
    settings.database.url = format!("{}/{db}", server_url()).into();
    settings.database.max_connections = 30;
    settings.server.port = 0;
    settings.server.workers = 2;
    // Budgets of this test only, generous: tests about rate limits set their own.
    settings.rate_limits.key_prefix = format!("test:{}:", Uuid::new_v4().simple());
    settings.rate_limits.per_ip_per_minute = 1_000_000;
    settings.rate_limits.sign_in_per_ip_per_minute = 1_000_000;
    settings.rate_limits.per_user_per_minute = 1_000_000;
    settings.rate_limits.per_tenant_per_minute = 1_000_000;
    settings.rate_limits.questions_per_user_per_minute = 1_000_000;
    settings.rate_limits.questions_per_tenant_per_minute = 1_000_000;
    settings.rate_limits.questions_per_tenant_per_month = 1_000_000_000;
    // Tests that need the broker turn streaming on (`TestAppBuilder::streaming`).
    settings.kafka.enabled = false;
    settings.platform.operator_token = Some(
        format!(
            "platform-{}{}",
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        )
        .into(),
    );
    settings
}

/// A login role that is a member of `answers_api` and nothing else, as a production deployment
/// has (roles are cluster-wide: created once, by whichever test comes first).
pub async fn api_login() -> String {
    const LOGIN: &str = "answers_api_test_login";
    let pool = PgPool::connect(&format!("{}/postgres", server_url()))
        .await
        .expect("the server's postgres database");
    sqlx::query(
        "DO $$ BEGIN
           BEGIN CREATE ROLE answers_api NOLOGIN;
           EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
           BEGIN CREATE ROLE answers_api_test_login LOGIN IN ROLE answers_api;
           EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
         END $$",
    )
    .execute(&pool)
    .await
    .expect("the API's test login");
    pool.close().await;
    LOGIN.to_string()
}

/// The Kafka-compatible broker the tests use; `KAFKA_BOOTSTRAP_SERVERS` overrides it.
pub fn kafka_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Polls `probe` every 100 ms until it returns `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The conversations read model, row for row, in a stable order.
pub async fn read_model(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT to_jsonb(r) FROM rm_conversations r ORDER BY tenant_id, conversation_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

pub async fn stored_conversation_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'conversation'")
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn applied_conversation_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT applied_events FROM projection_status WHERE projection = 'conversations'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or(0)
}

/// Waits until the relay has published every stored event.
pub async fn wait_until_published(pool: &PgPool) {
    wait_for("the relay to publish everything", Duration::from_secs(60), || async {
        let lag: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events e, relay_checkpoints c WHERE (e.transaction_id, e.position) > (c.transaction_id, c.position)",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (lag == 0).then_some(())
    })
    .await
}

/// Waits until the conversations projection has applied every stored conversation event once.
pub async fn wait_until_projected(pool: &PgPool, timeout: Duration) {
    wait_for("the read model to catch up", timeout, || async {
        let stored = stored_conversation_events(pool).await;
        let applied = applied_conversation_events(pool).await;
        assert!(
            applied <= stored,
            "applied {applied} > stored {stored}: something was applied twice"
        );
        (stored > 0 && applied == stored).then_some(())
    })
    .await
}

pub use answers_api::metrics::metric_value;

/// A port nothing listens on now (for a server a test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `redis-server` of one test's own, on a free port, keeping nothing on disk: to stop and
/// start under a running service.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = free_port();
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    /// Starts it (again) on its port; returns once it accepts connections.
    pub fn restart(&mut self) {
        let child = Command::new(std::env::var("REDIS_SERVER").unwrap_or("redis-server".into()))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian's redis-server package)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a test's application is made: a fresh database and a free port, then whatever the test
/// changes (streaming on, settings, the answer engine, the clock).
pub struct TestAppBuilder {
    settings: Settings,
    production: bool,
    engine: Option<Arc<dyn AnswerEngine>>,
    clock: Option<Arc<dyn commands::Clock>>,
}

impl TestAppBuilder {
    /// The relay and projections on, on topics and consumer groups of this test only.
    pub fn streaming(mut self) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let kafka = &mut self.settings.kafka;
        kafka.enabled = true;
        kafka.bootstrap_servers = kafka_bootstrap();
        kafka.topic_prefix = format!("t{}", &id[..12]);
        kafka.consumer_group = format!("g{}", &id[..12]);
        kafka.relay.idle_ms = 20;
        self
    }

    /// The embedded transport: every projection follows the event store in this process, no
    /// broker.
    pub fn embedded(mut self) -> Self {
        self.settings.kafka.enabled = false;
        self.settings.embedded.enabled = true;
        self
    }

    /// Changes the settings before the start.
    pub fn configure(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(&mut self.settings);
        self
    }

    pub fn engine(mut self, engine: Arc<dyn AnswerEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    pub fn clock(mut self, clock: Arc<dyn commands::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The settings the application will start with.
    /// Profile production, with what it requires: a signing key, a pseudonym key, and an API
    /// database login held to row-level security ([`api_login`]).
    pub fn production(mut self) -> Self {
        let pem = identity::keys::generate_pem().expect("a signing key");
        self.settings.profile = answers_api::config::Profile::Production;
        self.settings.auth.signing_key = Some(pem.into());
        self.settings.auth.signing_key_id = Some("2026-11".into());
        self.settings.engine.pseudonym_key = "p".repeat(40).into();
        self.production = true;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Starts the production application (`Application::build_with`) and serves it.
    pub async fn spawn(mut self) -> TestApp {
        if self.production {
            self.settings.database.api_username = Some(api_login().await);
        }
        // `TEST_LOG=1` shows the application's logs (pretty) while a test runs.
        if std::env::var_os("TEST_LOG").is_some() {
            let mut log = self.settings.log.clone();
            log.format = "pretty".into();
            let _ = answers_api::telemetry::init(&log, &self.settings.tracing);
        }
        let engine = self
            .engine
            .unwrap_or_else(|| Arc::new(commands::LocalAnswerEngine));
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(commands::SystemClock));
        let app = Application::build_with(self.settings.clone(), engine, clock)
            .await
            .expect("the application starts");
        let settings = self.settings;
        let address = format!("http://127.0.0.1:{}", app.port());
        let pool = app.pool().clone();
        let tenant_pool = app.tenant_pool().clone();
        let server = app.handle();
        let (signal, stop) = tokio::sync::oneshot::channel();
        let running = tokio::spawn(
            app.run_until(async move { stop.await.unwrap_or(shutdown::Signal::Interrupt) }),
        );
        TestApp {
            server,
            running: std::sync::Mutex::new(Some(running)),
            signal: std::sync::Mutex::new(Some(signal)),
            address,
            pool,
            tenant_pool,
            client: reqwest::Client::new(),
            keys: JwtKeys::new(&settings.auth).expect("signing keys"),
            platform_token: settings
                .platform
                .operator_token
                .as_ref()
                .map(|t| secrecy::ExposeSecret::expose_secret(t).to_string())
                .unwrap_or_default(),
            settings,
        }
    }
}

impl TestApp {
    /// Stops the application as a shutdown would: the server, then every background task
    /// (relay, projections, workers), aborted where they stand. The database stays.
    pub async fn stop(&self) {
        self.server.stop(false).await;
        let running = self.running.lock().unwrap().take();
        if let Some(running) = running {
            let _ = running.await;
        }
    }

    /// Sends the application `signal` (a graceful stop, docs/deployment.md) and returns at once;
    /// [`TestApp::stopped`] waits for the end.
    pub fn signal(&self, signal: shutdown::Signal) {
        if let Some(sender) = self.signal.lock().unwrap().take() {
            let _ = sender.send(signal);
        }
    }

    /// Waits for the application to end, and says how it ended.
    pub async fn stopped(&self) -> std::io::Result<()> {
        let running = self.running.lock().unwrap().take();
        match running {
            Some(running) => running
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }

    /// A builder for another application on this one's database (a restart, a switch of
    /// transport), with its own port.
    pub fn builder_on_same_database(&self) -> TestAppBuilder {
        let url = self.settings.database.url.clone();
        TestApp::builder().configure(move |s| s.database.url = url)
    }

    /// Where the fake providers send the browser back (any URL: tests call the callback).
    pub const REDIRECT: &'static str = "https://app.test/callback";

    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            settings: test_settings(),
            production: false,
            engine: None,
            clock: None,
        }
    }

    /// The application with every default (no broker).
    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    /// A client that does not follow redirects (sign-in answers with one).
    pub fn no_redirects(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// Starts a sign-in with `provider` (for `tenant`, or a platform operator's without one):
    /// what the app sent the browser to.
    pub async fn start_sign_in(
        &self,
        provider: &str,
        tenant: Option<&str>,
    ) -> idp::AuthorizeRequest {
        let query = tenant.map(|t| format!("?tenant={t}")).unwrap_or_default();
        let response = self
            .no_redirects()
            .get(format!(
                "{}/v1/auth/{provider}/authorize{query}",
                self.address
            ))
            .send()
            .await
            .expect("authorize");
        assert_eq!(response.status().as_u16(), 302, "authorize redirects");
        let location = response.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        idp::AuthorizeRequest::parse(&location)
    }

    /// The provider's redirect back to the app.
    pub async fn callback(&self, provider: &str, code: &str, state: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}/v1/auth/{provider}/callback", self.address))
            .query(&[("code", code), ("state", state)])
            .send()
            .await
            .expect("callback");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A whole OpenID Connect sign-in with `claims` (their `nonce` is filled in when absent).
    pub async fn oidc_sign_in(
        &self,
        provider: &str,
        tenant: Option<&str>,
        idp: &idp::FakeOidc,
        mut claims: Value,
    ) -> (u16, Value) {
        let request = self.start_sign_in(provider, tenant).await;
        if claims.get("nonce").is_none() {
            claims["nonce"] = Value::String(request.nonce.clone().expect("nonce"));
        }
        let code = format!("code-{}", Uuid::new_v4().simple());
        idp.issue(&code, &request.code_challenge, &idp.sign(&claims))
            .await;
        self.callback(provider, &code, &request.state).await
    }

    pub fn token(&self, tenant: &str, role: Role, user: &str) -> String {
        self.keys.mint(user, tenant, role, 3600).expect("token")
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    /// GET `path` with the platform operator credential (status, metrics, health details).
    pub async fn operator_get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(&self.platform_token)
            .send()
            .await
            .expect("an operator request")
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.send(Method::POST, path, token, Some(body)).await
    }

    /// Sends and returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let response = self.send(method, path, token, body).await;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Creates `tenant` with `admin` as its admin and returns the admin's token.
    pub async fn create_tenant(&self, tenant: &str, admin: &str) -> String {
        let token = self.token(tenant, Role::Admin, admin);
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/tenant",
                &token,
                Some(serde_json::json!({"name": tenant})),
            )
            .await;
        assert_eq!(status, 201, "tenant created: {body}");
        token
    }

    /// Starts a conversation and returns (conversation id, answer id).
    pub async fn ask(&self, token: &str, question: &str) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/conversations",
                token,
                Some(serde_json::json!({"question": question})),
            )
            .await;
        assert_eq!(status, 201, "question asked: {body}");
        (
            body["id"].as_str().unwrap().to_string(),
            body["answer"]["answer_id"].as_str().unwrap().to_string(),
        )
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// An engine that takes its time, so that concurrent requests really overlap.
pub struct SlowEngine(pub Duration);

#[async_trait]
impl AnswerEngine for SlowEngine {
    async fn answer(
        &self,
        request: AnswerRequest,
        _chunks: Option<Arc<dyn ChunkSink>>,
    ) -> Result<EngineAnswer, EngineFailure> {
        tokio::time::sleep(self.0).await;
        Ok(EngineAnswer {
            text: format!("slow answer to {}", request.question),
            sources: vec![],
            uncertain: false,
            latency_ms: self.0.as_millis() as u64,
            engine: "slow".into(),
            engine_answer_id: Uuid::new_v4().to_string(),
            engine_thread_id: None,
            first_chunk_ms: None,
        })
    }
}

/// Counts the questions that reach it (and answers like the local engine), so a test can tell
/// which requests paid for an engine call.
#[derive(Default)]
pub struct CountingEngine {
    pub calls: std::sync::atomic::AtomicUsize,
    pub delay: Duration,
}

#[async_trait]
impl AnswerEngine for CountingEngine {
    async fn answer(
        &self,
        request: AnswerRequest,
        chunks: Option<Arc<dyn ChunkSink>>,
    ) -> Result<EngineAnswer, EngineFailure> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        commands::LocalAnswerEngine.answer(request, chunks).await
    }
}

/// Independent checks after one long setup: each runs even when an earlier one failed, and the
/// test fails at the end with every failure, so one wrong figure does not hide the rest.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    pub async fn check<F: std::future::Future<Output = ()>>(&mut self, name: &str, check: F) {
        use futures::FutureExt;
        if let Err(panic) = std::panic::AssertUnwindSafe(check).catch_unwind().await {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            self.failures.push(format!("{name}: {message}"));
        }
    }

    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// The conversations projection with `hook` run before each apply: a test counts what a runner
/// is given, or fails on purpose (as a lost connection would) to see what a restart does.
pub struct HookedConversations<H>(pub H);

#[async_trait::async_trait]
impl<H> projections::Projection for HookedConversations<H>
where
    H: Fn(&projections::Projected) -> Result<(), projections::ApplyError> + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        projections::Folded(projections::conversations::Conversations).name()
    }
    fn aggregate_types(&self) -> &'static [domain::AggregateType] {
        projections::Folded(projections::conversations::Conversations).aggregate_types()
    }
    fn tables(&self) -> &'static [&'static str] {
        projections::Folded(projections::conversations::Conversations).tables()
    }
    async fn apply(
        &self,
        conn: &mut sqlx::PgConnection,
        event: &projections::Projected,
    ) -> Result<bool, projections::ApplyError> {
        (self.0)(event)?;
        projections::Projection::apply(
            &projections::Folded(projections::conversations::Conversations),
            conn,
            event,
        )
        .await
    }
}

/// A hook failing once, as a lost connection would, when `after` events went before it.
pub fn fail_once_after(
    after: usize,
) -> impl Fn(&projections::Projected) -> Result<(), projections::ApplyError> + Send + Sync + 'static
{
    let seen = std::sync::atomic::AtomicUsize::new(0);
    move |_| {
        if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == after {
            return Err(projections::ApplyError::Transient(sqlx::Error::Protocol(
                "injected failure".into(),
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Checks;

    #[tokio::test]
    async fn every_failed_check_is_reported_not_only_the_first() {
        let mut checks = Checks::default();
        checks.check("first", async { panic!("one") }).await;
        checks.check("second", async {}).await;
        checks
            .check("third", async { assert_eq!(1, 2, "three") })
            .await;
        let report = std::panic::catch_unwind(move || checks.finish()).unwrap_err();
        let report = report.downcast_ref::<String>().unwrap();
        assert!(report.contains("2 check(s) failed"), "{report}");
        assert!(report.contains("first: one"), "{report}");
        assert!(report.contains("third:"), "{report}");
        assert!(!report.contains("second"), "{report}");
    }
}
