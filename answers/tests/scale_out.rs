//! Issue 15's scale-out, proven on one machine with real processes of the `answers` binary
//! against one PostgreSQL and the broker (docs/deployment.md): projections and relays shared
//! between processes and taking over from a killed one, API processes behind no shared memory
//! holding idempotency, concurrency and rate limits together, and a rolling restart under load
//! without a failed request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use support::*;
use tokio::task::JoinHandle;

/// Issue 15's scale-out, on the projections: two `answers project` processes share every
/// projection's partitions (through PostgreSQL, docs/streaming.md); one is killed with SIGKILL
/// under load and the other takes its partitions; the read model then equals a rebuild.
#[tokio::test]
async fn two_projection_processes_share_the_partitions_and_one_takes_over_from_a_killed_one() {
    let _serial = ONE_AT_A_TIME.lock().await;
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
    let _serial = ONE_AT_A_TIME.lock().await;
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

/// One test at a time in this file: each runs several processes, and on a 2-core machine
/// six at once would measure the machine, not the takeover times they assert.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A load balancer in miniature, as an orchestrator's endpoints work: requests go round-robin to
/// the instances whose `/health/ready` answered 200 at the last look (every 100 ms).
struct Balancer {
    ready: Arc<Mutex<Vec<String>>>,
    next: AtomicUsize,
}

impl Balancer {
    fn watch(addresses: Vec<String>, stop: Arc<AtomicBool>) -> (Arc<Self>, JoinHandle<()>) {
        let balancer = Arc::new(Self {
            ready: Arc::new(Mutex::new(Vec::new())),
            next: AtomicUsize::new(0),
        });
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let watching = balancer.clone();
        let task = tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut ready = Vec::new();
                for address in &addresses {
                    let answer = probe.get(format!("{address}/health/ready")).send().await;
                    if answer.is_ok_and(|r| r.status() == 200) {
                        ready.push(address.clone());
                    }
                }
                *watching.ready.lock().unwrap() = ready;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (balancer, task)
    }

    /// The next ready instance (waits while none is).
    async fn pick(&self) -> String {
        loop {
            {
                let ready = self.ready.lock().unwrap();
                if !ready.is_empty() {
                    let n = self.next.fetch_add(1, Ordering::Relaxed);
                    return ready[n % ready.len()].clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Two instances serve a steady stream of questions through the balancer; each in turn is
/// stopped with SIGTERM and started again. No request fails, the stopped processes exit 0, every
/// accepted question is stored once, and the read models converge and equal a rebuild.
#[tokio::test]
async fn a_rolling_restart_under_load_fails_no_request_and_loses_or_doubles_no_event() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (db, first, client, token) = set_up(Transport::Kafka);
    let second = Service::new(&db, Transport::Kafka);
    let drain = [("APP__SHUTDOWN__DRAIN_MS", "1500")];
    // One after the other: the first creates the database and migrates it.
    let mut a = first.start_with(&[], &drain);
    first.ready(&client).await;
    let mut b = second.start_with(&[], &drain);
    second.ready(&client).await;
    first.create_tenant(&client, &token).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (balancer, watching) =
        Balancer::watch(vec![first.address(), second.address()], stop.clone());
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let load: Vec<_> = (0..4)
        .map(|c| {
            let (client, token, balancer) = (client.clone(), token.clone(), balancer.clone());
            let (accepted, failed, stop) = (accepted.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // A steady stream (about 40 questions a second from the four clients), not
                    // as many as the machine takes: the read models must catch up within the
                    // check's 60 s whatever the machine's speed.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let address = balancer.pick().await;
                    let question = format!("Client {c}, question {n}");
                    let sent = send_question(&client, &address, &token, question).await;
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            let body: serde_json::Value = r.json().await.unwrap();
                            accepted
                                .lock()
                                .unwrap()
                                .push(body["id"].as_str().unwrap().to_string());
                        }
                        Ok(r) => {
                            let refusal = format!(
                                "{address}: {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            );
                            failed.lock().unwrap().push(refusal);
                        }
                        Err(e) => failed.lock().unwrap().push(format!("{address}: {e:?}")),
                    }
                }
            })
        })
        .collect();

    let mut restarts = Vec::new();
    for (service, process) in [(&first, &mut a), (&second, &mut b)] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let asked_at = Instant::now();
        process.terminate();
        let status = process.exited(Duration::from_secs(20)).await;
        restarts.push(asked_at.elapsed());
        assert!(
            status.is_some_and(|s| s.success()),
            "a SIGTERMed instance exits 0 within the drain and grace: {status:?}"
        );
        *process = service.start_with(&[], &drain);
        service.ready(&client).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    watching.await.unwrap();
    let accepted = accepted.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    eprintln!(
        "rolling restart: {} accepted, {} failed, stops took {restarts:?}",
        accepted.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        accepted.len() > 100,
        "the load ran: {} accepted",
        accepted.len()
    );

    let pool = PgPool::connect(&format!("{}/{db}", server_url()))
        .await
        .unwrap();
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT split_part(aggregate_id, '/', 2), count(*) FROM events
          WHERE event_type = 'QuestionAsked' GROUP BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let stored: std::collections::HashMap<String, i64> = stored.into_iter().collect();
    for id in &accepted {
        assert_eq!(stored.get(id), Some(&1), "question {id} stored once");
    }
    assert_eq!(
        stored.len(),
        accepted.len(),
        "nothing stored but what was accepted"
    );
    let converged = converges(&pool, accepted.len() as i64).await;
    let live = conversations_model(&pool).await;
    drop((a, b));
    assert!(converged, "the read models did not converge within 60 s");
    assert_eq!(live.len(), accepted.len());
    assert_equals_a_rebuild(&pool, &live).await;
    pool.close().await;
    drop_database(&db).await;
}

/// `answers relay` and `answers project` stop on SIGTERM after their current batch, exit 0, and
/// let their lock and partitions go at once: a standby relay publishes what comes next and the
/// events keep reaching the read model.
#[tokio::test]
async fn relay_and_projection_processes_stop_gracefully_on_sigterm_and_hand_over() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (db, service, client, token) = set_up(Transport::Kafka);
    let mut server = service.start_with(
        &[],
        &[
            ("APP__KAFKA__RELAY__IN_PROCESS", "false"),
            ("APP__KAFKA__PROJECTIONS_IN_PROCESS", "false"),
        ],
    );
    service.ready(&client).await;
    let ports = [free_port(), free_port()];
    let (relay_port, project_port) = (ports[0].to_string(), ports[1].to_string());
    let mut relay = service.start_with(&["relay"], &[("APP__SERVER__PORT", &relay_port)]);
    let mut project = service.start_with(&["project"], &[("APP__SERVER__PORT", &project_port)]);
    service.create_tenant(&client, &token).await;
    service.ask(&client, &token, 0..10).await;
    let pool = PgPool::connect(&format!("{}/{db}", server_url()))
        .await
        .unwrap();
    assert!(
        converges(&pool, 10).await,
        "the processes relay and project"
    );
    // Each serves its probes and metrics (docs/deployment.md): the relay's published events,
    // the projections' lag.
    for (port, metric) in [
        (&relay_port, "answers_relay_events_published_total"),
        (&project_port, "answers_projection_lag_events"),
    ] {
        let base = format!("http://127.0.0.1:{port}");
        for probe in ["/health/live", "/health/ready"] {
            let answer = client.get(format!("{base}{probe}")).send().await.unwrap();
            assert_eq!(answer.status(), 200, "{base}{probe}");
        }
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(metric), "{base}/metrics has {metric}");
    }

    // Stopped while questions keep coming.
    let load = tokio::spawn(service.ask(&client, &token, 10..40));
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.terminate();
    project.terminate();
    for (what, process) in [("relay", &mut relay), ("project", &mut project)] {
        let status = process.exited(Duration::from_secs(15)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "`answers {what}` exits 0 on SIGTERM: {status:?}"
        );
    }
    // Their successors take over the lock and the partitions.
    let mut relay = service.start_with(&["relay"], &[]);
    let mut project = service.start_with(&["project"], &[]);
    load.await.unwrap();
    service.ask(&client, &token, 40..50).await;
    let converged = converges(&pool, 50).await;
    let live = conversations_model(&pool).await;
    for child in [&mut relay, &mut project, &mut server] {
        child.kill();
    }
    assert!(converged, "the successors did not catch up within 60 s");
    assert_eq!(live.len(), 50);
    assert_equals_a_rebuild(&pool, &live).await;
    pool.close().await;
    drop_database(&db).await;
}

/// Two API processes on one database (and one Redis), no memory shared: the first runs the
/// projections, the second only serves. `extra` adds to both environments.
async fn two_api_processes(
    extra: &[(&str, &str)],
) -> (String, [Service; 2], [Process; 2], reqwest::Client, String) {
    let (db, first, client, token) = set_up(Transport::Embedded);
    let second = Service::new(&db, Transport::Embedded);
    let a = first.start_with(&[], extra);
    first.ready(&client).await;
    let mut serve_only = extra.to_vec();
    serve_only.push(("APP__EMBEDDED__ENABLED", "false"));
    let b = second.start_with(&[], &serve_only);
    second.ready(&client).await;
    first.create_tenant(&client, &token).await;
    (db, [first, second], [a, b], client, token)
}

/// The racing tests of idempotency and optimistic concurrency (tests/integration/
/// idempotency.rs, concurrency.rs), split over two processes: one key, one set of events and
/// one answer everywhere; racing follow-ups leave a gapless stream and 409 losers.
#[tokio::test]
async fn two_api_processes_hold_idempotency_and_optimistic_concurrency_together() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (db, services, processes, client, token) = two_api_processes(&[]).await;
    let post = |n: usize, path: String, key: Option<String>, body: serde_json::Value| {
        let (client, token) = (client.clone(), token.clone());
        let address = services[n % 2].address();
        async move {
            let mut request = client
                .post(format!("{address}{path}"))
                .bearer_auth(&token)
                .json(&body);
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };

    // Fifty retries of one request with one key, half to each process.
    let body = json!({"question": "How do I rotate my API key?"});
    let retries = futures::future::join_all((0..50).map(|n| {
        post(
            n,
            "/v1/conversations".into(),
            Some("key-1".into()),
            body.clone(),
        )
    }))
    .await;
    let (status, first) = &retries[0];
    assert_eq!(*status, 201, "{first}");
    for answer in &retries {
        assert_eq!(answer, &retries[0], "every retry answers like the first");
    }
    let pool = PgPool::connect(&format!("{}/{db}", server_url()))
        .await
        .unwrap();
    let keyed = scalar(
        &pool,
        "SELECT count(*) FROM events WHERE idempotency_key = 'key-1'",
    )
    .await;
    assert_eq!(keyed, 1, "one question stored for the key");
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'QuestionAsked'"
        )
        .await,
        1
    );

    // Twenty follow-ups race for the conversation's next sequence, half on each process.
    let conversation = first["id"].as_str().unwrap().to_string();
    let raced = futures::future::join_all((0..20).map(|n| {
        post(
            n,
            format!("/v1/conversations/{conversation}/questions"),
            None,
            json!({"question": format!("follow-up number {n}")}),
        )
    }))
    .await;
    let winners = raced.iter().filter(|(s, _)| *s == 200).count();
    let losers: Vec<_> = raced.iter().filter(|(s, _)| *s == 409).collect();
    assert_eq!(winners + losers.len(), 20, "only 200 or 409: {raced:?}");
    assert!(winners >= 1 && !losers.is_empty(), "{raced:?}");
    for (_, problem) in &losers {
        assert!(
            ["concurrent_modification", "question_pending"]
                .contains(&problem["code"].as_str().unwrap()),
            "{problem}"
        );
    }
    let sequences: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_type = 'conversation' ORDER BY sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<i64> = (1..=(2 + 2 * winners as i64)).collect();
    assert_eq!(
        sequences, expected,
        "gapless: the first question plus two events per winner"
    );
    drop(processes);
    pool.close().await;
    drop_database(&db).await;
}

/// The rate limits' budgets live in Redis: two processes refuse the request past the budget as
/// one would.
#[tokio::test]
async fn two_api_processes_share_one_rate_limit_budget() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let prefix = format!("scale-out-{}:", uuid::Uuid::new_v4().simple());
    let (db, services, processes, client, _) = two_api_processes(&[
        ("APP__RATE_LIMITS__ENABLED", "true"),
        ("APP__RATE_LIMITS__KEY_PREFIX", &prefix),
        ("APP__RATE_LIMITS__PER_USER_PER_MINUTE", "6"),
    ])
    .await;
    // A user of its own: the set-up's requests counted against the admin's budget.
    let token = services[0].token_for("acme", "viewer", "rita");
    let mut statuses = Vec::new();
    for n in 0..10 {
        let answer = client
            .get(format!("{}/v1/auth/me", services[n % 2].address()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 429, 429, 429, 429],
        "exactly the budget across both processes"
    );
    drop(processes);
    drop_database(&db).await;
}
