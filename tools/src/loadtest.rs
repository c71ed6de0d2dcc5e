//! `answers loadtest`: a tenant's day at a target rate. People ask, follow up and rate answers,
//! managers read the dashboards and conversations, admins manage sources and page the audit
//! trail — mixed by weight, spread over several tenants, sent open-loop (each request leaves at
//! its scheduled time whatever the service's pace, and its latency counts from then, so a slow
//! service cannot slow the test down and hide its own queueing). Prints throughput, error rate
//! and p50/p95/p99 per route, writes a JSON report, checks `perf/budgets.toml` and, with
//! `--sweep`, plots latency against offered load (docs/benchmarks.md).
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use domain::Role;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::migrate::MigrateDatabase;
use sqlx::Postgres;
use uuid::Uuid;

use crate::bench::{fresh, ms, percentile};
use crate::budgets::{BudgetFile, Figures};
use crate::plot::{self, Point};
use crate::write_stdout;
use answers_api::auth::JwtKeys;
use answers_api::{Application, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Projections follow the event store (no broker).
    Embedded,
    /// Through the Kafka relay and topics (`kafka.bootstrap_servers`).
    Kafka,
}

#[derive(Debug, Clone, Args)]
pub struct LoadtestArgs {
    /// Requests per second offered.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of load (per step with --sweep).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Offered rates to step through (e.g. 25,50,100,200): latency against load, plotted.
    #[arg(long, value_delimiter = ',', conflicts_with = "budgets")]
    pub sweep: Vec<f64>,
    /// Tenants sharing the load.
    #[arg(long, default_value_t = 3)]
    pub tenants: usize,
    /// A running service to load (its `auth.signing_key` must be this configuration's, and its
    /// profile must accept development tokens). Default: start one on a fresh database.
    #[arg(long)]
    pub url: Option<String>,
    /// The transport of the service this command starts.
    #[arg(long, value_enum, default_value_t = Transport::Embedded)]
    pub transport: Transport,
    /// Check the run against these budgets; exit non-zero on a breach.
    #[arg(long)]
    pub budgets: Option<PathBuf>,
    /// The budgets' tier to check (`ci`: loose, for a short run on a shared machine).
    #[arg(long, default_value = "full")]
    pub tier: String,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the sweep's plot (SVG) here.
    #[arg(long, requires = "sweep")]
    pub plot: Option<PathBuf>,
    /// Requests in flight at most; a request due while this many are waiting is counted as
    /// failed (`shed`): the service is saturated.
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// The same seed sends the same sequence of requests.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// What one request of the scenario does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Ask,
    FollowUp,
    Rate,
    ListConversations,
    ReadConversation,
    Analytics,
    AuditPage,
    AddSource,
    EditSource,
    ListSources,
}

/// The scenario's mix: a support team's working hour, by weight.
const MIX: [(Step, u32); 10] = [
    (Step::Ask, 26),
    (Step::FollowUp, 12),
    (Step::Rate, 14),
    (Step::ListConversations, 12),
    (Step::ReadConversation, 10),
    (Step::Analytics, 10),
    (Step::ListSources, 6),
    (Step::AuditPage, 4),
    (Step::AddSource, 3),
    (Step::EditSource, 3),
];

/// Every route the scenario sends, as the budgets name them.
pub const ROUTES: [&str; 10] = [
    "POST /v1/conversations",
    "POST /v1/conversations/{id}/questions",
    "PUT /v1/conversations/{id}/answers/{answer_id}/feedback",
    "GET /v1/conversations",
    "GET /v1/conversations/{id}",
    "GET /v1/analytics",
    "GET /v1/audit",
    "POST /v1/sources",
    "PATCH /v1/sources/{id}",
    "GET /v1/sources",
];

impl Step {
    fn route(self) -> &'static str {
        ROUTES[self as usize]
    }
}

/// One tenant's people and what they have made so far.
struct TenantLoad {
    admin: String,
    operators: Vec<String>,
    viewer: String,
    /// Recent conversations with their last answer (rated and followed up by others).
    conversations: Mutex<VecDeque<(Uuid, Option<Uuid>, Instant)>>,
    sources: Mutex<Vec<Uuid>>,
}

const RECENT: usize = 500;

/// How long after its creation a conversation is read by someone who found it in the list.
const LISTED_AFTER: Duration = Duration::from_secs(1);

/// Which recent conversation a step needs.
#[derive(Clone, Copy)]
enum Pick {
    Any,
    /// One with an answer to rate.
    Answered,
    /// One the read model has had time to show.
    Listed,
}

/// A request's fate.
#[derive(Debug, Clone)]
enum Fate {
    /// Answered with a success; for a cached view, whether the read cache served it.
    Done { cache_hit: Option<bool> },
    /// The service answered with this status (not a success).
    Status(u16),
    /// No HTTP answer (connection refused, reset, timed out).
    Transport,
    /// Not sent: `max_in_flight` requests were still waiting.
    Shed,
}

#[derive(Debug, Clone)]
struct Sample {
    route: &'static str,
    latency: Duration,
    fate: Fate,
}

#[derive(Debug, Serialize)]
struct RouteStats {
    route: String,
    count: usize,
    errors: usize,
    error_rate: f64,
    per_second: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Failures by status (`503`, `transport`, `shed`).
    failures: BTreeMap<String, usize>,
}

impl RouteStats {
    fn of(route: &str, samples: &[&Sample], elapsed: Duration) -> Self {
        let latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        let mut failures = BTreeMap::new();
        for s in samples {
            let key = match s.fate {
                Fate::Done { .. } => continue,
                Fate::Status(code) => code.to_string(),
                Fate::Transport => "transport".into(),
                Fate::Shed => "shed".into(),
            };
            *failures.entry(key).or_insert(0) += 1;
        }
        let errors = failures.values().sum();
        RouteStats {
            route: route.to_string(),
            count: samples.len(),
            errors,
            error_rate: errors as f64 / samples.len().max(1) as f64,
            per_second: samples.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: ms(percentile(&latencies, 50.0)),
            p95_ms: ms(percentile(&latencies, 95.0)),
            p99_ms: ms(percentile(&latencies, 99.0)),
            max_ms: ms(latencies.iter().max().copied().unwrap_or_default()),
            failures,
        }
    }

    fn figures(&self) -> Figures {
        Figures {
            route: self.route.clone(),
            count: self.count,
            error_rate: self.error_rate,
            p50_ms: self.p50_ms,
            p95_ms: self.p95_ms,
            p99_ms: self.p99_ms,
        }
    }

    fn line(&self) -> String {
        format!(
            "{:<56} {:>7} {:>6} {:>6.2}% {:>7.1} {:>8.1} {:>8.1} {:>8.1}\n",
            self.route,
            self.count,
            self.errors,
            100.0 * self.error_rate,
            self.per_second,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms
        )
    }
}

#[derive(Debug, Serialize)]
struct StepReport {
    offered_per_second: f64,
    duration_secs: f64,
    completed_per_second: f64,
    /// Completed over offered: below 1, the service fell behind.
    throughput_ratio: f64,
    /// The largest resident set of this process during the step (MiB): the service and the
    /// load generator together when the service runs in-process.
    peak_rss_mib: Option<f64>,
    /// Dashboard reads the read cache served, over those it could have (`X-Cache`).
    read_cache_hit_rate: Option<f64>,
    all: RouteStats,
    routes: Vec<RouteStats>,
}

#[derive(Debug, Serialize)]
struct BudgetReport {
    file: String,
    tier: String,
    breaches: Vec<crate::budgets::Breach>,
}

#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    version: &'static str,
    machine: Value,
    target: String,
    tenants: usize,
    seed: u64,
    steps: Vec<StepReport>,
    budgets: Option<BudgetReport>,
}

pub async fn run(settings: Settings, args: LoadtestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0.0 && args.duration > 0 && args.tenants > 0 && args.max_in_flight > 0,
        "--rate, --duration, --tenants and --max-in-flight must be positive"
    );
    anyhow::ensure!(
        args.sweep.iter().all(|r| *r > 0.0),
        "every --sweep rate must be positive"
    );
    // Read the budgets first: a mistake in the file should not cost a whole run.
    let budgets = match &args.budgets {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let file =
                BudgetFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            file.tier(&args.tier)?.names_only(&ROUTES)?;
            Some(file)
        }
        None => None,
    };
    let keys = JwtKeys::new(&settings.auth)?;
    match args.url.clone() {
        Some(url) => {
            let url = url.trim_end_matches('/').to_string();
            drive(&keys, &url, &url, &args, budgets.as_ref()).await
        }
        None => {
            let (mut settings, db_url) = fresh(&settings, 16);
            // The load test measures the service, not its rate limits (which would refuse it).
            settings.rate_limits.enabled = false;
            settings.kafka.enabled = args.transport == Transport::Kafka;
            settings.embedded.enabled = args.transport == Transport::Embedded;
            settings.validate()?;
            let result = async {
                let app = Application::build(settings).await?;
                let address = format!("http://127.0.0.1:{}", app.port());
                let server = tokio::spawn(app.run_until_stopped());
                let target = format!(
                    "a service started on a fresh database ({:?})",
                    args.transport
                )
                .to_lowercase();
                let result = drive(&keys, &address, &target, &args, budgets.as_ref()).await;
                server.abort();
                result
            }
            .await;
            let _ = Postgres::force_drop_database(&db_url).await;
            result
        }
    }
}

async fn drive(
    keys: &JwtKeys,
    address: &str,
    target: &str,
    args: &LoadtestArgs,
    budgets: Option<&BudgetFile>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight)
        .timeout(Duration::from_secs(30))
        .build()?;
    let tenants = Arc::new(set_up(&client, keys, address, args).await?);
    let rates = if args.sweep.is_empty() {
        vec![args.rate]
    } else {
        args.sweep.clone()
    };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut steps = Vec::new();
    for rate in rates {
        let step = load(&client, address, &tenants, args, rate, &mut rng).await?;
        steps.push(step);
    }

    let mut text = format!(
        "answers loadtest: {target}, {} tenants, {} cores\n",
        args.tenants,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for step in &steps {
        text.push_str(&format!(
            "\noffered {:.0}/s for {:.0} s: completed {:.1}/s ({:.1}% of offered), peak RSS {}, \
             read cache hit rate {}\n",
            step.offered_per_second,
            step.duration_secs,
            step.completed_per_second,
            100.0 * step.throughput_ratio,
            step.peak_rss_mib
                .map_or("unknown".to_string(), |m| format!("{m:.0} MiB")),
            step.read_cache_hit_rate
                .map_or("-".to_string(), |r| format!("{:.1}%", 100.0 * r))
        ));
        text.push_str(&format!(
            "{:<56} {:>7} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8}\n",
            "route", "count", "errors", "err %", "per s", "p50 ms", "p95 ms", "p99 ms"
        ));
        for route in &step.routes {
            text.push_str(&route.line());
        }
        text.push_str(&step.all.line());
    }

    let budget_report = match budgets {
        Some(file) => {
            let tier = file.tier(&args.tier)?;
            let step = steps
                .first()
                .ok_or_else(|| anyhow::anyhow!("the run has no step"))?;
            let routes: Vec<Figures> = step.routes.iter().map(RouteStats::figures).collect();
            let breaches =
                tier.check(&ROUTES, &routes, &step.all.figures(), step.throughput_ratio)?;
            text.push_str(&format!(
                "\nbudgets {} (tier {}{}): {}\n",
                args.budgets
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                args.tier,
                tier.description
                    .as_ref()
                    .map_or(String::new(), |d| format!(": {d}")),
                if breaches.is_empty() {
                    "all met".to_string()
                } else {
                    format!("{} breached", breaches.len())
                }
            ));
            for breach in &breaches {
                text.push_str(&format!("  BREACH {breach}\n"));
            }
            Some(BudgetReport {
                file: args
                    .budgets
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                tier: args.tier.clone(),
                breaches,
            })
        }
        None => None,
    };

    if let Some(path) = &args.plot {
        let points: Vec<Point> = steps
            .iter()
            .map(|s| Point {
                offered: s.offered_per_second,
                achieved: s.completed_per_second,
                p50_ms: s.all.p50_ms,
                p95_ms: s.all.p95_ms,
                p99_ms: s.all.p99_ms,
                error_rate: s.all.error_rate,
            })
            .collect();
        let title = format!(
            "answers loadtest: latency against offered load ({} cores, {} tenants, {} s per step)",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            args.tenants,
            args.duration
        );
        write_file(path, &plot::latency_against_load(&title, &points))?;
        text.push_str(&format!("\nplot: {}\n", path.display()));
    }
    let breached = budget_report
        .as_ref()
        .map_or(0, |b: &BudgetReport| b.breaches.len());
    let report = Report {
        tool: "answers loadtest",
        version: env!("CARGO_PKG_VERSION"),
        machine: json!({
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
        }),
        target: target.to_string(),
        tenants: args.tenants,
        seed: args.seed,
        steps,
        budgets: budget_report,
    };
    if let Some(path) = &args.report {
        write_file(path, &serde_json::to_string_pretty(&report)?)?;
        text.push_str(&format!("report: {}\n", path.display()));
    }
    write_stdout(&text)?;
    anyhow::ensure!(
        breached == 0,
        "{breached} performance budget(s) breached (tier {})",
        args.tier
    );
    Ok(())
}

fn write_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Creates the tenants (each with a source, so admins have something to edit) and mints their
/// people's tokens.
async fn set_up(
    client: &reqwest::Client,
    keys: &JwtKeys,
    address: &str,
    args: &LoadtestArgs,
) -> anyhow::Result<Vec<TenantLoad>> {
    let ttl = args.duration * (args.sweep.len().max(1) as u64) + 3600;
    let run = &Uuid::new_v4().simple().to_string()[..8];
    let mut tenants = Vec::new();
    for t in 0..args.tenants {
        let tenant = format!("load-{run}-{t}");
        let admin = keys.mint("load-admin", &tenant, Role::Admin, ttl)?;
        let created = client
            .post(format!("{address}/v1/tenant"))
            .bearer_auth(&admin)
            .json(&json!({"name": format!("Load test {t}")}))
            .send()
            .await?;
        anyhow::ensure!(
            created.status().as_u16() == 201,
            "could not create tenant {tenant}: {} {}",
            created.status(),
            created.text().await.unwrap_or_default()
        );
        let operators = (0..5)
            .map(|u| keys.mint(&format!("agent-{u}"), &tenant, Role::Operator, ttl))
            .collect::<Result<Vec<_>, _>>()?;
        let viewer = keys.mint("manager", &tenant, Role::Viewer, ttl)?;
        tenants.push(TenantLoad {
            admin,
            operators,
            viewer,
            conversations: Mutex::new(VecDeque::new()),
            sources: Mutex::new(Vec::new()),
        });
    }
    Ok(tenants)
}

/// One step: `rate` requests per second for `args.duration` seconds.
async fn load(
    client: &reqwest::Client,
    address: &str,
    tenants: &Arc<Vec<TenantLoad>>,
    args: &LoadtestArgs,
    rate: f64,
    rng: &mut StdRng,
) -> anyhow::Result<StepReport> {
    let total = (rate * args.duration as f64).round().max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let weights: u32 = MIX.iter().map(|(_, w)| w).sum();
    let samples = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let progress = indicatif::ProgressBar::new(total as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} requests, {elapsed} ({msg})",
        )?
        .progress_chars("=> "),
    );
    progress.set_prefix(format!("{rate:.0}/s"));
    let failures = Arc::new(AtomicUsize::new(0));
    let rss = crate::memory::RssSampler::start();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut pick = rng.gen_range(0..weights);
        let step = MIX
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map_or(Step::Ask, |(s, _)| *s);
        let tenant = rng.gen_range(0..tenants.len());
        let person = rng.gen::<u32>();
        let topic = rng.gen_range(0..crate::seed::TOPICS.len());
        if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
            record(&samples, step.route(), due, Fate::Shed, &failures);
            progress.inc(1);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (client, address, tenants) = (client.clone(), address.to_string(), tenants.clone());
        let (samples, in_flight, failures, progress) = (
            samples.clone(),
            in_flight.clone(),
            failures.clone(),
            progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let tenant = &tenants[tenant];
            let (route, fate) = perform(&client, &address, tenant, step, person, topic, i).await;
            record(&samples, route, due, fate, &failures);
            in_flight.fetch_sub(1, Ordering::Relaxed);
            progress.inc(1);
            progress.set_message(format!("{} failed", failures.load(Ordering::Relaxed)));
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let peak_rss_mib = rss.peak();
    let samples = std::mem::take(
        &mut *samples
            .lock()
            .map_err(|_| anyhow::anyhow!("a request task panicked"))?,
    );
    let all: Vec<&Sample> = samples.iter().collect();
    let routes = ROUTES
        .iter()
        .filter_map(|route| {
            let of: Vec<&Sample> = samples.iter().filter(|s| s.route == *route).collect();
            (!of.is_empty()).then(|| RouteStats::of(route, &of, elapsed))
        })
        .collect();
    let cacheable: Vec<bool> = samples
        .iter()
        .filter_map(|s| match s.fate {
            Fate::Done { cache_hit } => cache_hit,
            _ => None,
        })
        .collect();
    let read_cache_hit_rate = (!cacheable.is_empty())
        .then(|| cacheable.iter().filter(|hit| **hit).count() as f64 / cacheable.len() as f64);
    let all = RouteStats::of("all", &all, elapsed);
    let completed = all.count - all.errors;
    Ok(StepReport {
        offered_per_second: rate,
        duration_secs: elapsed.as_secs_f64(),
        completed_per_second: completed as f64 / elapsed.as_secs_f64(),
        throughput_ratio: completed as f64 / total as f64,
        peak_rss_mib,
        read_cache_hit_rate,
        all,
        routes,
    })
}

fn record(
    samples: &Mutex<Vec<Sample>>,
    route: &'static str,
    due: Instant,
    fate: Fate,
    failures: &AtomicUsize,
) {
    if !matches!(fate, Fate::Done { .. }) {
        failures.fetch_add(1, Ordering::Relaxed);
    }
    if let Ok(mut samples) = samples.lock() {
        samples.push(Sample {
            route,
            latency: due.elapsed(),
            fate,
        });
    }
}

/// Sends one request of the scenario; a step that needs what does not exist yet (a follow-up
/// with no conversation) becomes the step that makes it.
async fn perform(
    client: &reqwest::Client,
    address: &str,
    tenant: &TenantLoad,
    step: Step,
    person: u32,
    topic: usize,
    i: usize,
) -> (&'static str, Fate) {
    let operator = &tenant.operators[person as usize % tenant.operators.len()];
    // Who asked goes on at once (commands need no read model); a manager reading a conversation
    // found it in the list, so only one the read model has had a second to show.
    let recent = |pick: Pick| {
        tenant.conversations.lock().ok().and_then(|c| {
            let candidates: Vec<_> = c
                .iter()
                .filter(|(_, answer, at)| match pick {
                    Pick::Any => true,
                    Pick::Answered => answer.is_some(),
                    Pick::Listed => at.elapsed() >= LISTED_AFTER,
                })
                .collect();
            (!candidates.is_empty()).then(|| {
                let (c, a, _) = candidates[person as usize % candidates.len()];
                (*c, *a)
            })
        })
    };
    let source = || {
        tenant
            .sources
            .lock()
            .ok()
            .and_then(|s| (!s.is_empty()).then(|| s[person as usize % s.len()]))
    };
    let question = crate::seed::QUESTIONS[i % crate::seed::QUESTIONS.len()]
        .replace("{t}", crate::seed::TOPICS[topic]);
    let step = match step {
        Step::FollowUp if recent(Pick::Any).is_none() => Step::Ask,
        Step::ReadConversation if recent(Pick::Listed).is_none() => Step::ListConversations,
        Step::Rate if recent(Pick::Answered).is_none() => Step::Ask,
        Step::EditSource if source().is_none() => Step::AddSource,
        other => other,
    };
    let request = match step {
        Step::Ask => client
            .post(format!("{address}/v1/conversations"))
            .bearer_auth(operator)
            .json(&json!({"question": question, "channel": "web"})),
        Step::FollowUp => {
            let (conversation, _) = recent(Pick::Any).unwrap_or_default();
            client
                .post(format!(
                    "{address}/v1/conversations/{conversation}/questions"
                ))
                .bearer_auth(operator)
                .json(
                    &json!({"question": format!("And what about {}?", crate::seed::TOPICS[topic])}),
                )
        }
        Step::Rate => {
            let (conversation, answer) = recent(Pick::Answered).unwrap_or_default();
            let body = if person.is_multiple_of(5) {
                json!({"reaction": "downvote", "reasons": ["unaddressed"], "comment": "missing a step"})
            } else {
                json!({"reaction": "upvote"})
            };
            client
                .put(format!(
                    "{address}/v1/conversations/{conversation}/answers/{}/feedback",
                    answer.unwrap_or_default()
                ))
                .bearer_auth(operator)
                .json(&body)
        }
        Step::ListConversations => client
            .get(format!("{address}/v1/conversations?limit=20"))
            .bearer_auth(&tenant.viewer),
        Step::ReadConversation => {
            let (conversation, _) = recent(Pick::Listed).unwrap_or_default();
            client
                .get(format!("{address}/v1/conversations/{conversation}"))
                .bearer_auth(&tenant.viewer)
        }
        Step::Analytics => {
            let range = ["24h", "7d", "30d"][person as usize % 3];
            client
                .get(format!("{address}/v1/analytics?range={range}"))
                .bearer_auth(&tenant.viewer)
        }
        Step::AuditPage => client
            .get(format!("{address}/v1/audit?limit=50"))
            .bearer_auth(&tenant.admin),
        Step::AddSource => client
            .post(format!("{address}/v1/sources"))
            .bearer_auth(&tenant.admin)
            .json(&json!({
                "kind": "docs",
                "name": format!("Docs {i}"),
                "location": format!("https://docs.example.test/{i}"),
            })),
        Step::EditSource => {
            let id = source().unwrap_or_default();
            client
                .patch(format!("{address}/v1/sources/{id}"))
                .bearer_auth(&tenant.admin)
                .json(&json!({"name": format!("Docs (renamed {i})")}))
        }
        Step::ListSources => client
            .get(format!("{address}/v1/sources"))
            .bearer_auth(&tenant.viewer),
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(_) => return (step.route(), Fate::Transport),
    };
    let status = response.status();
    let cache_hit = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| match v {
            "hit" => Some(true),
            "miss" => Some(false),
            _ => None,
        });
    if !status.is_success() {
        return (step.route(), Fate::Status(status.as_u16()));
    }
    // What the scenario's people go on with: the conversation and its answer, the source.
    if matches!(step, Step::Ask | Step::FollowUp | Step::AddSource) {
        let Ok(body) = response.json::<Value>().await else {
            return (step.route(), Fate::Transport);
        };
        let id = body["id"].as_str().and_then(|s| s.parse::<Uuid>().ok());
        let answer = body["answer"]["answer_id"]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok());
        match (step, id) {
            (Step::AddSource, Some(id)) => {
                if let Ok(mut sources) = tenant.sources.lock() {
                    sources.push(id);
                }
            }
            (_, Some(id)) => {
                if let Ok(mut conversations) = tenant.conversations.lock() {
                    let since = conversations
                        .iter()
                        .find(|(c, _, _)| *c == id)
                        .map_or_else(Instant::now, |(_, _, at)| *at);
                    conversations.retain(|(c, _, _)| *c != id);
                    conversations.push_back((id, answer, since));
                    if conversations.len() > RECENT {
                        conversations.pop_front();
                    }
                }
            }
            _ => {}
        }
    } else if response.bytes().await.is_err() {
        return (step.route(), Fate::Transport);
    }
    (step.route(), Fate::Done { cache_hit })
}
