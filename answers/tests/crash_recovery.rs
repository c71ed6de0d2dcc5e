//! The whole service killed with SIGKILL under load, again and again, then started once more:
//! with no one touching anything, every read model converges with the store, no accepted
//! command is missing, nothing is applied twice and no question is left pending (issue 12,
//! docs/projections.md). The real binary, a real process kill, on each transport.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A started `answers` process, killed with SIGKILL when dropped: a failing test leaves no
/// process behind holding database connections.
struct Process(Child);

impl Process {
    /// SIGKILL, and waits for the process to be gone.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Service {
    env: Vec<(String, String)>,
    port: u16,
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Embedded,
    Kafka,
}

impl Service {
    fn new(db: &str, transport: Transport) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_answers"));
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn start(&self) -> Process {
        self.start_with(&[], &[])
    }

    /// The binary with `args` and extra environment `env`.
    fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Process {
        Process(
            self.command()
                .args(args)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the service starts"),
        )
    }

    fn env(&self, key: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn token(&self) -> String {
        let out = self
            .command()
            .args([
                "token", "--tenant", "acme", "--role", "admin", "--user", "alice",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Asks questions `numbers` one after another (each must be accepted). Owns what it needs,
    /// so it can run as a task of its own.
    fn ask(
        &self,
        client: &reqwest::Client,
        token: &str,
        numbers: std::ops::Range<usize>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (client, token, address) = (client.clone(), token.to_string(), self.address());
        async move {
            for i in numbers {
                let r = client
                    .post(format!("{address}/v1/conversations"))
                    .bearer_auth(&token)
                    .json(&json!({"question": format!("How do I set up integration {i}?")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        }
    }

    /// Creates the token's tenant.
    async fn create_tenant(&self, client: &reqwest::Client, token: &str) {
        let created = client
            .post(format!("{}/v1/tenant", self.address()))
            .bearer_auth(token)
            .json(&json!({"name": "Acme"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }

    async fn ready(&self, client: &reqwest::Client) {
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
fn set_up(transport: Transport) -> (String, Service, reqwest::Client, String) {
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

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// How far the store and the conversations projection are.
struct Progress {
    /// Questions asked.
    asked: i64,
    /// Questions answered, failed or blocked.
    settled: i64,
    /// Conversation events stored.
    conversation_events: i64,
    /// Conversation events the projection applied (never more than stored: none twice).
    applied: i64,
}

async fn progress(pool: &PgPool) -> Progress {
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
async fn converges(pool: &PgPool, asked: i64) -> bool {
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
async fn conversations_model(pool: &PgPool) -> Vec<serde_json::Value> {
    sqlx::query_scalar(
        "SELECT to_jsonb(r) FROM rm_conversations r ORDER BY tenant_id, conversation_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Rebuilds the conversations projection from the store and compares it with `live`.
async fn assert_equals_a_rebuild(pool: &PgPool, live: &[serde_json::Value]) {
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
async fn drop_database(db: &str) {
    let admin = PgPool::connect(&format!("{}/postgres", server_url()))
        .await
        .unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(&admin)
        .await;
}

#[tokio::test]
async fn killed_with_sigkill_under_load_it_converges_by_itself_on_the_embedded_transport() {
    killed_with_sigkill_under_load_it_converges_by_itself(Transport::Embedded).await;
}

#[tokio::test]
async fn killed_with_sigkill_under_load_it_converges_by_itself_on_kafka() {
    killed_with_sigkill_under_load_it_converges_by_itself(Transport::Kafka).await;
}

async fn killed_with_sigkill_under_load_it_converges_by_itself(transport: Transport) {
    let (db, service, client, token) = set_up(transport);

    let mut child = service.start();
    service.ready(&client).await;
    service.create_tenant(&client, &token).await;

    // Eight clients asking all along; the ids of the questions the service accepted.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|c| {
            let (client, token, address) = (client.clone(), token.clone(), service.address());
            let (accepted, stop) = (accepted.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let sent = client
                        .post(format!("{address}/v1/conversations"))
                        .bearer_auth(&token)
                        .json(&json!({"question": format!("Client {c}, question {n}")}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            if let Some(id) = body["id"].as_str() {
                                accepted.lock().unwrap().push(id.to_string());
                            }
                        }
                        // Refused connections and cut requests while the service is down.
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();

    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200 + 300 * round)).await;
        child.kill();
        child = service.start();
        service.ready(&client).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let last_start = Instant::now();
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 20,
        "the load ran: {} accepted",
        accepted.len()
    );

    let pool = PgPool::connect(&format!("{}/{db}", server_url()))
        .await
        .unwrap();
    // Every accepted question is in the store.
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT split_part(aggregate_id, '/', 2) FROM events
          WHERE event_type = 'QuestionAsked'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let missing: Vec<&String> = accepted.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");

    // Converges within 60 s of the last start, with nothing done by hand.
    let converged = loop {
        let Progress {
            asked,
            settled,
            conversation_events,
            applied,
        } = progress(&pool).await;
        let rows = scalar(&pool, "SELECT count(*) FROM rm_conversations").await;
        let conversations = scalar(
            &pool,
            "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'conversation'",
        )
        .await;
        let lagging = scalar(
            &pool,
            "SELECT count(*) FROM projection_status p
              WHERE p.applied_events < (SELECT count(*) FROM events e WHERE e.aggregate_type = ANY(
                CASE p.projection WHEN 'sources' THEN ARRAY['knowledge_source']
                                  WHEN 'tenants' THEN ARRAY['tenant']
                                  WHEN 'conversations' THEN ARRAY['conversation']
                                  ELSE ARRAY['conversation', 'knowledge_source', 'tenant', 'account'] END))
                AND p.projection IN ('conversations', 'tenants')",
        )
        .await;
        if asked == settled
            && applied == conversation_events
            && rows == conversations
            && lagging == 0
        {
            eprintln!(
                "{transport:?}: converged {:?} after the last start ({} questions accepted)",
                last_start.elapsed(),
                accepted.len()
            );
            break true;
        }
        if last_start.elapsed() > Duration::from_secs(60) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let details = client
        .get(format!("{}/health/ready", service.address()))
        .send()
        .await
        .unwrap()
        .status();
    child.kill();
    pool.close().await;
    drop_database(&db).await;
    assert!(
        converged,
        "the read models did not converge within 60 s of the last start"
    );
    assert_eq!(details, 200);
}

/// Issue 15's scale-out, on the projections: two `answers project` processes share every
/// projection's partitions (through PostgreSQL, docs/streaming.md); one is killed with SIGKILL
/// under load and the other takes its partitions; the read model then equals a rebuild.
#[tokio::test]
async fn two_projection_processes_share_the_partitions_and_one_takes_over_from_a_killed_one() {
    let (db, service, client, token) = set_up(Transport::Kafka);
    let no_projections = [("APP__KAFKA__PROJECTIONS_IN_PROCESS", "false")];
    let mut server = service.start_with(&[], &no_projections);
    service.ready(&client).await;
    let mut first = service.start_with(&["project"], &[]);
    let mut second = service.start_with(&["project"], &[]);
    service.create_tenant(&client, &token).await;

    let pool = PgPool::connect(&format!("{}/{db}", server_url()))
        .await
        .unwrap();
    let group = format!(
        "{}.conversations",
        service.env("APP__KAFKA__CONSUMER_GROUP")
    );
    let partitions: Vec<streaming::TopicPartition> = (0..3)
        .map(|partition| streaming::TopicPartition {
            topic: format!("{}.conversation", service.env("APP__KAFKA__TOPIC_PREFIX")),
            partition,
        })
        .collect();
    let holders = |n: usize| {
        let (pool, group, partitions) = (pool.clone(), group.clone(), partitions.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let held = streaming::partition_holders(&pool, &group, &partitions)
                    .await
                    .unwrap();
                let pids: std::collections::BTreeSet<i32> = held.values().copied().collect();
                if held.len() == partitions.len() && pids.len() == n {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the partitions are not held by {n} processes: {held:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    holders(2).await;

    service.ask(&client, &token, 0..30).await;
    // Killed while events keep coming.
    let load = tokio::spawn(service.ask(&client, &token, 30..60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.kill();
    load.await.unwrap();
    holders(1).await;
    service.ask(&client, &token, 60..70).await;

    let converged = converges(&pool, 70).await;
    let live = conversations_model(&pool).await;
    for child in [&mut first, &mut server] {
        child.kill();
    }
    assert!(
        converged,
        "the survivor did not apply every event within 60 s"
    );
    assert_eq!(live.len(), 70);
    assert_equals_a_rebuild(&pool, &live).await;
    pool.close().await;
    drop_database(&db).await;
}

/// Issue 15's scale-out, on the relay: two `answers relay` processes, one publishing (it holds
/// the advisory lock) and one waiting; the active one is killed with SIGKILL under load and the
/// standby takes over within seconds; every event reaches the read model (the batch in flight
/// at the kill may be published twice: the projections skip what they hold) and the model
/// equals a rebuild.
#[tokio::test]
async fn a_standby_relay_takes_over_from_a_killed_one_and_nothing_is_lost() {
    let (db, service, client, token) = set_up(Transport::Kafka);
    let mut server = service.start_with(&[], &[("APP__KAFKA__RELAY__IN_PROCESS", "false")]);
    service.ready(&client).await;
    service.create_tenant(&client, &token).await;
    let pool = PgPool::connect(&format!("{}/{db}", server_url()))
        .await
        .unwrap();
    // Which relay holds the lock (`answers-relay:{kafka.relay.name}`), by the name each gives
    // its database connections: a relay that hits an error lets the lock go and takes it again
    // on a new connection, so backends do not name processes.
    let holder = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                    AND (l.classid::bigint << 32) | l.objid::bigint = hashtextextended('answers-relay:kafka', 0)",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    let wait_for_holder = |not: Option<String>| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Only a relay's own connection counts (a backend's name can read empty for a
            // moment while it starts).
            if let Some(name) = holder()
                .await
                .filter(|name| name.starts_with("relay-") && Some(name) != not.as_ref())
            {
                return (name, Instant::now());
            }
            assert!(Instant::now() < deadline, "no relay took the lock");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let relay = |name: &str| {
        let url = format!("{}/{db}?application_name={name}", server_url());
        service.start_with(&["relay"], &[("APP__DATABASE__URL", url.as_str())])
    };
    let mut relays = [relay("relay-a"), relay("relay-b")];
    wait_for_holder(None).await;
    service.ask(&client, &token, 0..20).await;
    let load = tokio::spawn(service.ask(&client, &token, 20..60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The one publishing now is killed; the other must take over.
    let (first, _) = wait_for_holder(None).await;
    let [a, b] = &mut relays;
    let (active, standby) = if first == "relay-a" { (a, b) } else { (b, a) };
    active.kill();
    let killed_at = Instant::now();
    let (second, took_at) = wait_for_holder(Some(first.clone())).await;
    let takeover = took_at - killed_at;
    load.await.unwrap();
    service.ask(&client, &token, 60..70).await;

    let converged = converges(&pool, 70).await;
    let live = conversations_model(&pool).await;
    for child in [standby, &mut server] {
        child.kill();
    }
    eprintln!("{second} took over from {first} {takeover:?} after the kill");
    assert!(
        takeover < Duration::from_secs(5),
        "the standby took {takeover:?}"
    );
    assert!(converged, "the read models did not converge within 60 s");
    assert_eq!(live.len(), 70);
    assert_equals_a_rebuild(&pool, &live).await;
    pool.close().await;
    drop_database(&db).await;
}
