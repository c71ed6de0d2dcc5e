//! The `answers` binary's subcommands.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use domain::Role;

use answers_api::auth::JwtKeys;
use answers_api::config::Profile;
use answers_api::{openapi, startup, telemetry, Application, Settings};
use answers_tools::{bench, loadtest, seed, write_stdout};

#[derive(Debug, Parser)]
#[command(name = "answers", version, about = "The AI answers platform backend")]
pub struct Cli {
    /// A TOML configuration file, read after the defaults and before `APP__*` variables.
    #[arg(long, global = true, env = "APP_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Run the database migrations and exit.
    Migrate,
    /// Print a new Ed25519 signing key (PKCS#8 PEM) for `auth.signing_key`.
    Keygen,
    /// Mint a development token (no session; refused by the production profile).
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "admin")]
        role: Role,
        #[arg(long, default_value = "dev-user")]
        user: String,
        /// Lifetime in seconds (default: auth.dev_token_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Run only the Kafka relay (to scale it out of the server; one instance publishes at a time).
    Relay,
    /// Run only the projections (consumers of the event topics).
    Project,
    /// Rebuild a projection from the event store and swap it in, then exit.
    Rebuild {
        /// The projection's name (e.g. `conversations`).
        name: String,
    },
    /// Write a realistic demo data set through the command path, over past days.
    Seed(seed::SeedArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Drive a freshly started service with concurrent clients and compare it with plain inserts.
    Bench(bench::BenchArgs),
    /// Asks this instance's health route (`server.port`) and exits 0 when it answers 200: the
    /// container image's health check, without a shell or curl in the image.
    Probe {
        /// `live` or `ready`.
        #[arg(default_value = "live")]
        level: ProbeLevel,
    },
    /// A mixed scenario at a target rate: throughput, errors and latency per route, a JSON
    /// report, performance budgets (`--budgets perf/budgets.toml`) and a latency sweep.
    Loadtest(loadtest::LoadtestArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProbeLevel {
    Live,
    Ready,
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let settings = Settings::load(self.config.as_deref())?;
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                settings.validate()?;
                let _telemetry = telemetry::init(&settings.log, &settings.tracing)?;
                let app = Application::build(settings).await?;
                app.run_until(stop_signal()).await?;
            }
            Command::Migrate => {
                let _telemetry = telemetry::init(&settings.log, &settings.tracing)?;
                let pool = startup::connect(&settings.database).await?;
                event_store::migrate(&pool)
                    .await
                    .context("could not run the database migrations")?;
                tracing::info!("migrations applied");
            }
            Command::Token {
                tenant,
                role,
                user,
                ttl,
            } => {
                if settings.profile == Profile::Production {
                    anyhow::bail!(
                        "`answers token` is for development: production tokens come from signing in (docs/identity.md)"
                    );
                }
                let keys = JwtKeys::new(&settings.auth)?;
                let token = keys.mint(
                    &user,
                    &tenant,
                    role,
                    ttl.unwrap_or(settings.auth.dev_token_ttl_secs),
                )?;
                write_stdout(&format!("{token}\n"))?;
            }
            Command::Keygen => {
                write_stdout(&identity::keys::generate_pem()?)?;
            }
            Command::Relay => {
                let _telemetry = telemetry::init(&settings.log, &settings.tracing)?;
                let pool = startup::connect(&settings.database).await?;
                let halt = shutdown::Shutdown::new();
                let metrics = worker_metrics(&settings, &pool)?;
                let relay = startup::run_relay(
                    pool.clone(),
                    settings.kafka.clone(),
                    Some(&metrics),
                    halt.clone(),
                )?;
                serve_worker_endpoints(&settings, &pool, metrics, &halt)?;
                let relay = tokio::spawn(relay);
                stop_after_signal(halt, relay, &settings)
                    .await?
                    .context("the relay stopped")?;
                pool.close().await;
            }
            Command::Project => {
                let _telemetry = telemetry::init(&settings.log, &settings.tracing)?;
                let pool = startup::connect(&settings.database).await?;
                let halt = shutdown::Shutdown::new();
                serve_worker_endpoints(&settings, &pool, worker_metrics(&settings, &pool)?, &halt)?;
                let runners: Vec<_> = projections::all()
                    .into_iter()
                    .map(|p| {
                        let source = streaming::KafkaSource::for_projection(
                            settings.kafka.clone(),
                            pool.clone(),
                            p.as_ref(),
                        );
                        tokio::spawn(
                            projections::ProjectionRunner::new(pool.clone(), p, source)
                                .with_stall_detection(std::time::Duration::from_millis(
                                    settings.health.stall_after_ms,
                                ))
                                .with_shutdown(halt.clone())
                                .run_supervised(),
                        )
                    })
                    .collect();
                let all = tokio::spawn(async move {
                    futures::future::join_all(runners).await;
                });
                stop_after_signal(halt, all, &settings).await?;
                pool.close().await;
            }
            Command::Rebuild { name } => {
                let _telemetry = telemetry::init(&settings.log, &settings.tracing)?;
                let pool = startup::connect(&settings.database).await?;
                let projection = projections::find(&name)
                    .ok_or_else(|| anyhow::anyhow!("no projection named `{name}`"))?;
                let report = projections::rebuild(&pool, projection.as_ref()).await?;
                write_stdout(&format!(
                    "rebuilt {}: {} events read, {} applied in {:.2}s\n",
                    report.projection, report.events_read, report.events_applied, report.seconds
                ))?;
            }
            Command::Probe { level } => {
                let path = match level {
                    ProbeLevel::Live => "live",
                    ProbeLevel::Ready => "ready",
                };
                let url = format!("http://127.0.0.1:{}/health/{path}", settings.server.port);
                let answer = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .build()?
                    .get(&url)
                    .send()
                    .await
                    .with_context(|| format!("{url} does not answer"))?;
                anyhow::ensure!(
                    answer.status().is_success(),
                    "{url} answered {}",
                    answer.status()
                );
            }
            Command::Seed(args) => seed::run(settings, args).await?,
            Command::Openapi => write_stdout(&openapi::document()?)?,
            Command::Bench(args) => bench::run(settings, args).await?,
            Command::Loadtest(args) => loadtest::run(settings, args).await?,
        }
        Ok(())
    }
}

/// The metrics of a process that runs the relay or the projections (no HTTP API).
fn worker_metrics(
    settings: &answers_api::Settings,
    pool: &sqlx::PgPool,
) -> anyhow::Result<std::sync::Arc<answers_api::metrics::Metrics>> {
    Ok(std::sync::Arc::new(
        answers_api::metrics::Metrics::new(
            settings.metrics.tenant_label_cap,
            vec![("owner", pool.clone())],
            None,
            &settings.slo,
        )
        .context("could not set up the metrics registry")?,
    ))
}

/// Health and metrics on `server.port` for the orchestrator and Prometheus, until `halt`.
fn serve_worker_endpoints(
    settings: &answers_api::Settings,
    pool: &sqlx::PgPool,
    metrics: std::sync::Arc<answers_api::metrics::Metrics>,
    halt: &shutdown::Shutdown,
) -> anyhow::Result<()> {
    let (_, server) =
        answers_api::worker_endpoints::serve(settings, pool.clone(), metrics, halt.clone())?;
    tokio::spawn(server);
    Ok(())
}

/// SIGTERM or SIGINT. Should the handlers fail to install, the process runs on: it can still
/// be killed, only not gracefully.
async fn stop_signal() -> shutdown::Signal {
    match shutdown::signal().await {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "could not listen for stop signals; a stop will not be graceful");
            std::future::pending().await
        }
    }
}

/// Runs `work` until it ends or a stop signal comes; then asks it to stop (`halt`) and waits for
/// it within `shutdown.grace_ms` (the relay and the projections finish their current batch).
async fn stop_after_signal<T>(
    halt: shutdown::Shutdown,
    mut work: tokio::task::JoinHandle<T>,
    settings: &answers_api::Settings,
) -> anyhow::Result<T> {
    tokio::select! {
        done = &mut work => return done.context("the work panicked"),
        _ = stop_signal() => {}
    }
    let grace = std::time::Duration::from_millis(settings.shutdown.grace_ms);
    match halt.stop_within(vec![work], grace).await {
        Some(mut ended) => {
            tracing::info!("stopped");
            ended
                .pop()
                .context("one task")?
                .context("the work panicked")
        }
        None => anyhow::bail!(
            "did not stop within shutdown.grace_ms ({} ms); cut",
            settings.shutdown.grace_ms
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn development_tokens_are_refused_in_production() {
        let pem = identity::keys::generate_pem().unwrap();
        let dir = std::env::temp_dir().join(format!("answers-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("production.toml");
        std::fs::write(
            &file,
            format!(
                "profile = \"production\"\n[auth]\nsigning_key = \"\"\"\n{pem}\"\"\"\nsigning_key_id = \"k1\"\n\
                 [engine]\npseudonym_key = \"{}\"\n",
                "p".repeat(40)
            ),
        )
        .unwrap();
        let token = |config: Option<PathBuf>| Cli {
            config,
            command: Some(Command::Token {
                tenant: "acme".into(),
                role: Role::Admin,
                user: "alice".into(),
                ttl: Some(60),
            }),
        };
        let err = token(Some(file.clone()))
            .run()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`answers token` is for development"), "{err}");
        token(None)
            .run()
            .await
            .expect("the development profile mints tokens");
        std::fs::remove_dir_all(dir).ok();
    }
}
