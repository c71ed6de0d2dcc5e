//! Analytics checked against figures computed here, from the generated inputs alone.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use commands::ManualClock;
use domain::engine::{AnswerEngine, AnswerRequest, CitedSource, EngineAnswer, EngineFailure};
use domain::Role;
use integration_tests::{wait_for, Checks, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// Decides from the question alone: "boom" fails, "quantum" is uncertain, "export" and
/// "billing" cite a page; latency is ten times the length.
struct ScriptedEngine;

#[async_trait]
impl AnswerEngine for ScriptedEngine {
    async fn answer(
        &self,
        r: AnswerRequest,
        _chunks: Option<std::sync::Arc<dyn domain::engine::ChunkSink>>,
    ) -> Result<EngineAnswer, EngineFailure> {
        let q = r.question.to_lowercase();
        if q.contains("boom") {
            return Err(EngineFailure::new(
                domain::engine::FailureKind::Unavailable,
                "engine exploded",
            ));
        }
        let mut sources = vec![];
        if q.contains("export") {
            sources.push(CitedSource {
                url: EXPORT_URL.into(),
                title: None,
            });
        }
        if q.contains("billing") {
            sources.push(CitedSource {
                url: BILLING_URL.into(),
                title: None,
            });
        }
        Ok(EngineAnswer {
            text: format!("Answer: {}", r.question),
            sources,
            uncertain: q.contains("quantum"),
            latency_ms: r.question.chars().count() as u64 * 10,
            engine: "scripted".into(),
            engine_answer_id: "x".into(),
            engine_thread_id: None,
            first_chunk_ms: None,
        })
    }
}

const EXPORT_URL: &str = "https://docs.acme.test/export/csv";
const BILLING_URL: &str = "https://docs.acme.test/billing/invoices";

/// (question, labelled intent, expected topic)
const TEMPLATES: [(&str, &str, Option<&str>); 7] = [
    ("How do I export my data to CSV?", "guiding", Some("export")),
    (
        "Export fails with error 500",
        "troubleshooting",
        Some("export"),
    ),
    (
        "What is the price of the billing plan?",
        "lookup",
        Some("billing"),
    ),
    (
        "Tell me a joke about quantum cats",
        "off_topic",
        Some("tell"),
    ),
    ("quantum roadmap", "other", Some("quantum")),
    ("Billing page boom", "other", Some("billing")),
    ("my card 4111 1111 1111 1111", "other", Some("card")),
];

const N: usize = 36;

struct Generated {
    i: usize,
    at: DateTime<Utc>,
    user: String,
    channel: &'static str,
    integration: Option<&'static str>,
    text: &'static str,
    intent: &'static str,
    topic: Option<&'static str>,
}

impl Generated {
    fn status(&self) -> &'static str {
        match self.i % 7 {
            5 => "failed",
            6 => "blocked",
            _ => "answered",
        }
    }
    fn uncertain(&self) -> bool {
        self.status() == "answered" && self.text.to_lowercase().contains("quantum")
    }
    /// Final reactions: (user, upvote?, reason)
    fn reactions(&self) -> Vec<(String, bool, Option<&'static str>)> {
        if self.status() != "answered" {
            return vec![];
        }
        let mut r = vec![];
        if self.i.is_multiple_of(2) {
            if self.i.is_multiple_of(10) {
                r.push((self.user.clone(), false, Some("incorrect")));
            } else {
                r.push((self.user.clone(), true, None));
            }
        }
        if self.i.is_multiple_of(5) {
            r.push(("u9".to_string(), false, Some("irrelevant")));
        }
        r
    }
    fn sources(&self) -> Vec<&'static str> {
        if self.status() != "answered" {
            return vec![];
        }
        let q = self.text.to_lowercase();
        let mut s = vec![];
        if q.contains("export") {
            s.push(EXPORT_URL);
        }
        if q.contains("billing") {
            s.push(BILLING_URL);
        }
        s
    }
    fn resolved(&self) -> bool {
        self.i % 4 == 1
    }
    fn escalated(&self) -> bool {
        self.i % 6 == 3
    }
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap() // a Monday
}

fn generate() -> Vec<Generated> {
    (0..N)
        .map(|i| {
            let (text, intent, topic) = TEMPLATES[i % 7];
            Generated {
                i,
                at: base() + Span::hours(2 * i as i64),
                user: format!("u{}", i % 5),
                channel: if i % 3 == 0 { "slack" } else { "web" },
                integration: if i % 4 == 0 { Some("widget") } else { None },
                text,
                intent,
                topic,
            }
        })
        .collect()
}

/// percentile_cont: linear interpolation between the closest ranks.
fn percentile_cont(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = p * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

async fn play(app: &TestApp, clock: &ManualClock, admin: &str, data: &[Generated]) {
    for g in data {
        clock.set(g.at);
        let token = app.token("acme", Role::Operator, &g.user);
        let mut body = json!({"question": g.text, "channel": g.channel});
        if let Some(i) = g.integration {
            body["integration_id"] = json!(i);
        }
        let (status, asked) = app
            .call(Method::POST, "/v1/conversations", &token, Some(body))
            .await;
        assert_eq!(status, 201, "{asked}");
        assert_eq!(asked["answer"]["status"], g.status(), "{}", g.text);
        let conversation = asked["id"].as_str().unwrap().to_string();
        clock.set(g.at + Span::minutes(1));
        if g.status() == "answered" {
            let answer = asked["answer"]["answer_id"].as_str().unwrap();
            let path = format!("/v1/conversations/{conversation}/answers/{answer}/feedback");
            if g.i.is_multiple_of(2) {
                // Everyone first upvotes; some change their mind below.
                app.call(
                    Method::PUT,
                    &path,
                    &token,
                    Some(json!({"reaction": "upvote"})),
                )
                .await;
            }
            for (user, up, reason) in g.reactions() {
                let t = app.token("acme", Role::Operator, &user);
                let body = if up {
                    json!({"reaction": "upvote"})
                } else {
                    json!({"reaction": "downvote", "reasons": [reason.unwrap()]})
                };
                let (s, b) = app.call(Method::PUT, &path, &t, Some(body)).await;
                assert_eq!(s, 200, "{b}");
            }
        }
        if g.escalated() {
            app.call(
                Method::POST,
                &format!("/v1/conversations/{conversation}/escalate"),
                &token,
                Some(json!({})),
            )
            .await;
        }
        if g.resolved() {
            app.call(
                Method::POST,
                &format!("/v1/conversations/{conversation}/resolve"),
                &token,
                None,
            )
            .await;
        }
    }
    // Two sync runs on the second day, for the cost allocation.
    clock.set(base() + Span::hours(30));
    let (_, source) = app
        .call(
            Method::POST,
            "/v1/sources",
            admin,
            Some(json!({"kind": "docs", "name": "D", "location": "https://d.test"})),
        )
        .await;
    let source = source["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        app.call(
            Method::POST,
            &format!("/v1/sources/{source}/sync"),
            admin,
            None,
        )
        .await;
        let run = uuid::Uuid::new_v4();
        app.call(
            Method::POST,
            &format!("/v1/sources/{source}/sync/start"),
            admin,
            Some(json!({"sync_id": run})),
        )
        .await;
        app.call(
            Method::POST,
            &format!("/v1/sources/{source}/sync/complete"),
            admin,
            Some(json!({"sync_id": run, "document_count": 3})),
        )
        .await;
    }
}

fn counts<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for k in items {
        *m.entry(k.to_string()).or_insert(0) += 1;
    }
    m
}

fn as_map(v: &Value) -> BTreeMap<String, i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_string(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn close(a: &Value, b: f64) {
    assert!((a.as_f64().unwrap() - b).abs() < 1e-9, "{a} != {b}");
}

#[tokio::test]
async fn every_figure_matches_what_the_generated_inputs_say() {
    let clock = ManualClock::at(base());
    let app = TestApp::builder()
        .streaming()
        .engine(Arc::new(ScriptedEngine))
        .clock(clock.clone())
        .spawn()
        .await;
    let admin = app.create_tenant("acme", "alice").await;
    let data = generate();
    play(&app, &clock, &admin, &data).await;
    // Another tenant's questions must not count.
    let other = app.create_tenant("other", "oscar").await;
    app.ask(&other, "How do I export my data to CSV?").await;
    wait_for(
        "the analytics read models to catch up",
        Duration::from_secs(90),
        || async {
            let (stored, questions, audit): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM events WHERE aggregate_type = 'conversation'), \
               (SELECT applied_events FROM projection_status WHERE projection = 'questions'), \
               (SELECT applied_events FROM projection_status WHERE projection = 'audit')",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            let all: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&app.pool)
                .await
                .unwrap();
            (questions == Some(stored) && audit == Some(all)).then_some(())
        },
    )
    .await;

    let window = "from=2026-03-02T00:00:00Z&to=2026-03-05T00:00:00Z";
    let (status, a) = app
        .call(
            Method::GET,
            &format!("/v1/analytics?{window}&bucket=day"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{a}");

    // What the generated inputs say, computed once for the checks below.
    let certain = data
        .iter()
        .filter(|g| g.status() == "answered" && !g.uncertain())
        .count();
    let uncertain = data.iter().filter(|g| g.uncertain()).count();
    let reactions: Vec<(String, bool, Option<&str>)> =
        data.iter().flat_map(|g| g.reactions()).collect();
    let up = reactions.iter().filter(|r| r.1).count() as f64;
    let down = reactions.iter().filter(|r| !r.1).count() as f64;
    let rated = data.iter().filter(|g| !g.reactions().is_empty()).count();
    let answered = certain + uncertain;
    let mut checks = Checks::default();

    // Volume and trends.
    checks
        .check("volume and trends", async {
            let users: BTreeSet<&str> = data.iter().map(|g| g.user.as_str()).collect();
            let per_user = counts(data.iter().map(|g| g.user.as_str()));
            assert_eq!(a["totals"]["questions"], N);
            assert_eq!(a["totals"]["unique_users"], users.len());
            assert_eq!(
                a["totals"]["active_users"],
                per_user.values().filter(|&&n| n >= 2).count()
            );
            assert_eq!(a["totals"]["conversations"], N);
            let mut days: BTreeMap<String, (i64, BTreeSet<&str>)> = BTreeMap::new();
            for g in &data {
                let day = days
                    .entry(g.at.format("%Y-%m-%dT00:00:00").to_string())
                    .or_default();
                day.0 += 1;
                day.1.insert(&g.user);
            }
            let volume: Vec<(String, i64, i64)> = a["volume"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["bucket_start"].as_str().unwrap().to_string(),
                        p["questions"].as_i64().unwrap(),
                        p["unique_users"].as_i64().unwrap(),
                    )
                })
                .collect();
            let expected: Vec<(String, i64, i64)> = days
                .into_iter()
                .map(|(d, (n, u))| (d, n, u.len() as i64))
                .collect();
            assert_eq!(volume, expected);
            assert_eq!(
                as_map(&a["by_channel"]),
                counts(data.iter().map(|g| g.channel))
            );
            assert_eq!(
                as_map(&a["by_integration"]),
                counts(data.iter().filter_map(|g| g.integration))
            );
        })
        .await;
    // Outcomes and latency.
    checks
        .check("outcomes and latency", async {
            assert_eq!(a["outcomes"]["answered"], certain);
            assert_eq!(a["outcomes"]["uncertain"], uncertain);
            assert_eq!(
                a["outcomes"]["failed"],
                data.iter().filter(|g| g.status() == "failed").count()
            );
            assert_eq!(
                a["outcomes"]["blocked"],
                data.iter().filter(|g| g.status() == "blocked").count()
            );
            assert_eq!(a["outcomes"]["pending"], 0);
            let latencies: Vec<f64> = data
                .iter()
                .filter(|g| g.status() == "answered")
                .map(|g| g.text.chars().count() as f64 * 10.0)
                .collect();
            close(
                &a["outcomes"]["latency_p50_ms"],
                percentile_cont(&latencies, 0.5),
            );
            close(
                &a["outcomes"]["latency_p95_ms"],
                percentile_cont(&latencies, 0.95),
            );
        })
        .await;
    // Feedback.
    checks
        .check("feedback", async {
            assert_eq!(a["feedback"]["upvotes"], up as i64);
            assert_eq!(a["feedback"]["downvotes"], down as i64);
            assert_eq!(a["feedback"]["rated_questions"], rated);
            close(
                &a["feedback"]["feedback_rate"],
                rated as f64 / answered as f64,
            );
            close(&a["feedback"]["satisfaction"], up / (up + down));
            assert_eq!(
                as_map(&a["feedback"]["downvote_reasons"]),
                counts(reactions.iter().filter_map(|r| r.2))
            );
        })
        .await;
    // Funnel and deflection.
    checks
        .check("funnel and deflection", async {
            let escalated = data.iter().filter(|g| g.escalated()).count();
            assert_eq!(a["funnel"]["asked"], N);
            assert_eq!(a["funnel"]["answered"], answered);
            assert_eq!(a["funnel"]["rated"], rated);
            assert_eq!(
                a["funnel"]["upvoted"],
                data.iter()
                    .filter(|g| g.reactions().iter().any(|r| r.1))
                    .count()
            );
            assert_eq!(
                a["funnel"]["resolved"],
                data.iter().filter(|g| g.resolved()).count()
            );
            assert_eq!(a["funnel"]["escalated_conversations"], escalated);
            close(
                &a["funnel"]["deflection_rate"],
                1.0 - escalated as f64 / N as f64,
            );
        })
        .await;
    // Intents, topics, top questions, coverage gaps, sources.
    checks
        .check(
            "intents, topics, top questions, coverage gaps, sources",
            async {
                assert_eq!(as_map(&a["intents"]), counts(data.iter().map(|g| g.intent)));
                assert_eq!(
                    as_map(&a["top_topics"]),
                    counts(data.iter().filter_map(|g| g.topic))
                );
                let top = &a["top_questions"][0];
                assert_eq!(top["question"], "how do i export my data to csv");
                assert_eq!(top["count"], data.iter().filter(|g| g.i % 7 == 0).count());
                let gaps: BTreeMap<String, i64> = a["coverage_gaps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| {
                        (
                            g["topic"].as_str().unwrap().to_string(),
                            g["questions"].as_i64().unwrap(),
                        )
                    })
                    .collect();
                let expected_gaps = counts(
                    data.iter()
                        .filter(|g| {
                            g.status() == "answered"
                                && (g.uncertain() || g.reactions().iter().any(|r| !r.1))
                        })
                        .filter_map(|g| g.topic),
                );
                assert_eq!(gaps, expected_gaps);
                assert_eq!(
                    as_map(&a["most_cited_sources"]),
                    counts(data.iter().flat_map(|g| g.sources()))
                );
                assert_eq!(
                    as_map(&a["downvoted_sources"]),
                    counts(
                        data.iter()
                            .filter(|g| g.reactions().iter().any(|r| !r.1))
                            .flat_map(|g| g.sources())
                    )
                );
            },
        )
        .await;
    // Time zones: New York is UTC-5 on these days, so local days start five hours later.
    checks
        .check("time zones", async {
            let (_, ny) = app
                .call(
                    Method::GET,
                    &format!("/v1/analytics?{window}&bucket=day&tz=America/New_York"),
                    &admin,
                    None,
                )
                .await;
            let ny_days = counts(
                data.iter()
                    .map(|g| {
                        (g.at - Span::hours(5))
                            .format("%Y-%m-%dT00:00:00")
                            .to_string()
                    })
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            );
            let got: BTreeMap<String, i64> = ny["volume"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["bucket_start"].as_str().unwrap().to_string(),
                        p["questions"].as_i64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(got, ny_days);
            let (_, hourly) = app
                .call(
                    Method::GET,
                    "/v1/analytics?from=2026-03-02T00:00:00Z&to=2026-03-02T06:00:00Z&bucket=hour",
                    &admin,
                    None,
                )
                .await;
            assert_eq!(
                hourly["totals"]["questions"], 3,
                "only 00:00, 02:00 and 04:00 fall in six hours"
            );
        })
        .await;
    // Cost allocation, JSON and CSV.
    checks
        .check("cost allocation, json and csv", async {
            let (_, cost) = app
                .call(
                    Method::GET,
                    &format!("/v1/analytics/cost?{window}&bucket=day"),
                    &admin,
                    None,
                )
                .await;
            let rows = cost.as_array().unwrap();
            for row in rows {
                let day = row["period_start"].as_str().unwrap();
                let of_day: Vec<&Generated> = data
                    .iter()
                    .filter(|g| g.at.format("%Y-%m-%dT00:00:00").to_string() == day)
                    .collect();
                assert_eq!(row["questions"], of_day.len(), "{day}");
                assert_eq!(
                    row["engine_calls"],
                    of_day.iter().filter(|g| g.status() != "blocked").count()
                );
                // What is stored is the question as screened: the card number redacted.
                let stored = |g: &&Generated| {
                    g.text
                        .replace("4111 1111 1111 1111", "[redacted:payment_card_number]")
                        .chars()
                        .count()
                };
                assert_eq!(
                    row["characters_in"],
                    of_day.iter().map(stored).sum::<usize>()
                );
                let out: usize = of_day
                    .iter()
                    .filter(|g| g.status() == "answered")
                    .map(|g| format!("Answer: {}", g.text).chars().count())
                    .sum();
                assert_eq!(row["characters_out"], out);
                assert_eq!(
                    row["sync_runs"],
                    if day == "2026-03-03T00:00:00" { 2 } else { 0 }
                );
            }
            let response = app
                .client
                .get(format!(
                    "{}/v1/analytics/cost?{window}&bucket=day&format=csv",
                    app.address
                ))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.headers()["content-type"],
                "text/csv; charset=utf-8"
            );
            let csv = response.text().await.unwrap();
            assert!(csv.starts_with("period_start,questions,engine_calls"));
            assert_eq!(csv.lines().count(), rows.len() + 1);
        })
        .await;
    // Bad windows are 400s.
    checks
        .check("bad windows are 400s", async {
            for (query, code) in [
                ("range=1y", "invalid_range"),
                ("bucket=minute", "invalid_bucket"),
                ("tz=Mars/Olympus", "invalid_time_zone"),
                (
                    "from=2026-03-05T00:00:00Z&to=2026-03-02T00:00:00Z",
                    "invalid_window",
                ),
            ] {
                let (status, problem) = app
                    .call(Method::GET, &format!("/v1/analytics?{query}"), &admin, None)
                    .await;
                assert_eq!(
                    (status, problem["code"].as_str()),
                    (400, Some(code)),
                    "{query}"
                );
            }
        })
        .await;
    // The other tenant sees only its own single question.
    checks
        .check(
            "the other tenant sees only its own single question",
            async {
                let (_, theirs) = app
                    .call(
                        Method::GET,
                        &format!("/v1/analytics?{window}"),
                        &other,
                        None,
                    )
                    .await;
                assert_eq!(theirs["totals"]["questions"], 1);
            },
        )
        .await;
    checks.finish();
}
