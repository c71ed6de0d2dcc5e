//! Start-up: connect, migrate, wire the command side, bind. Tests run exactly this on port 0.
use std::net::TcpListener;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware::from_fn, web, App, HttpServer};
use anyhow::Context;
use commands::{CommandBus, Engines, LocalAnswerEngine, Sweeper, SystemClock};
use domain::engine::AnswerEngine;
use event_store::TenantPool;
use kapa::KapaEngine;
use projections::questions::PgAnswerLibrary;
use secrecy::ExposeSecret;
use secrets::SecretResolver;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use streaming::{KafkaSettings, Relay};
use tokio::task::JoinHandle;

use crate::auth::{Auth, PlatformCredential};
use crate::config::{DatabaseSettings, Profile, Settings};
use crate::problem;
use crate::{middleware, routes};

/// The answer engines' state, for the platform's status route.
pub struct EngineStatus {
    /// The Kapa engine, when enabled.
    pub kapa: Option<Arc<KapaEngine>>,
}

pub struct Application {
    port: u16,
    pool: PgPool,
    tenants: TenantPool,
    server: Server,
    /// Loops that stop gracefully when `halt` is asked (the relay, the projections, the flag
    /// exposure flush): awaited, within `shutdown.grace_ms`.
    stoppable: Vec<JoinHandle<()>>,
    /// Loops that may be cut anywhere (what they do is retried or swept after a restart).
    background: Vec<JoinHandle<()>>,
    /// Draining, closing, requests in flight.
    lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// Asked once the server has stopped: the stoppable loops finish their batch and return.
    halt: shutdown::Shutdown,
    shutdown: crate::config::ShutdownSettings,
}

impl Application {
    /// Everything the service needs, ready to run. Binds `server.port` (0: any free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let engine: Arc<dyn AnswerEngine> = Arc::new(LocalAnswerEngine);
        Self::build_with_engine(settings, engine).await
    }

    pub async fn build_with_engine(
        settings: Settings,
        engine: Arc<dyn AnswerEngine>,
    ) -> anyhow::Result<Self> {
        Self::build_with(settings, engine, Arc::new(SystemClock)).await
    }

    /// With the answer engine and the clock the command side uses (tests and the seed command
    /// lay events over days).
    pub async fn build_with(
        settings: Settings,
        engine: Arc<dyn AnswerEngine>,
        clock: Arc<dyn commands::Clock>,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let token_keys = settings.auth.token_keys()?;
        if token_keys.is_development() {
            tracing::warn!("profile development: access tokens are signed with the built-in development key; production needs APP__AUTH__SIGNING_KEY");
        }
        let pool = connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            event_store::migrate(&pool)
                .await
                .context("could not run the database migrations")?;
        }
        let tenants = connect_api(&settings.database).await?;
        check_isolation(&tenants, settings.profile).await?;
        let reads = crate::read_pool::ReadPool(match connect_read_replica(&settings.database)? {
            Some(replica) => {
                tracing::info!(replica = %settings.database.redacted_read_url().unwrap_or_default(), "read routes query the replica");
                replica
            }
            None => tenants.clone(),
        });
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!(
                    "could not listen on {}:{}",
                    settings.server.host, settings.server.port
                )
            })?;
        let port = listener.local_addr()?.port();
        let metrics = Arc::new(
            crate::metrics::Metrics::new(
                settings.metrics.tenant_label_cap,
                vec![("owner", pool.clone()), ("api", tenants.unscoped().clone())],
                Some(tenants.clone()),
                &settings.slo,
            )
            .context("could not set up the metrics registry")?,
        );

        if settings.engine.pseudonym_key.expose_secret() == crate::config::DEV_PSEUDONYM_KEY {
            tracing::warn!("engine.pseudonym_key is the development default; set APP__ENGINE__PSEUDONYM_KEY in production");
        }
        let secrets = Arc::new(
            SecretResolver::new(settings.secrets.clone())
                .context("could not set up the secret resolver")?,
        );
        let kapa = if settings.kapa.enabled {
            let engine = KapaEngine::new(&settings.kapa, secrets.clone())
                .map_err(|e| anyhow::anyhow!("could not set up the Kapa client: {e}"))?;
            Some(Arc::new(engine))
        } else {
            None
        };
        let halt = shutdown::Shutdown::new();
        let mut stoppable = if settings.kafka.enabled {
            spawn_streaming(
                &pool,
                &settings.kafka,
                settings.metrics.enabled.then_some(&*metrics),
                Duration::from_millis(settings.health.stall_after_ms),
                &halt,
            )?
        } else if settings.embedded.enabled {
            spawn_embedded(
                &pool,
                &settings.embedded,
                Duration::from_millis(settings.health.stall_after_ms),
                &halt,
            )
        } else {
            Vec::new()
        };
        let mut background = Vec::new();
        let metrics_on = settings.metrics.enabled;
        let slis = settings
            .slo
            .enabled
            .then(|| Arc::new(crate::slo::SliRecorder::new(settings.slo.clone())));
        let measured = |name, engine: Arc<dyn AnswerEngine>| {
            crate::metrics::MeasuredEngine::wrap(
                name,
                engine,
                metrics_on.then(|| metrics.clone()),
                slis.clone(),
            )
        };
        let engines = Engines {
            kapa: kapa
                .clone()
                .map(|k| measured("kapa", k as Arc<dyn AnswerEngine>)),
            default: (settings.engine.default == "local").then(|| measured("local", engine)),
            library: Some(Arc::new(PgAnswerLibrary::new(tenants.clone()))),
        };
        let bus = Arc::new(
            CommandBus::new(
                tenants.clone(),
                engines,
                settings.answering(),
                clock,
                settings.idempotency(),
                Duration::from_millis(settings.flags.cache_ttl_ms),
            )
            .with_trace_context(Arc::new(trace_context::current)),
        );
        metrics
            .adopt(|| bus.metrics().collectors())
            .context("could not register the command side's metrics")?;
        metrics
            .adopt(|| bus.flags().collectors())
            .context("could not register the flag cache's metrics")?;
        let read_cache = Arc::new(
            crate::read_cache::ReadCache::new(&settings.read_cache)
                .context("invalid read_cache settings")?,
        );
        metrics
            .adopt(|| read_cache.collectors())
            .context("could not register the read cache's metrics")?;
        if let Some(kapa) = &kapa {
            metrics
                .adopt(|| kapa.collectors())
                .context("could not register the Kapa engine's metrics")?;
        }
        crate::flags::warn_about_stale_flags(chrono::Utc::now().date_naive());
        let flags = bus.flags();
        let flush_pool = pool.clone();
        let flush_every = Duration::from_millis(settings.flags.flush_interval_ms.max(10));
        let flush_halt = halt.clone();
        stoppable.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(flush_every);
            loop {
                let stopping = tokio::select! {
                    _ = ticker.tick() => false,
                    _ = flush_halt.stopping() => true,
                };
                // A failed flush is logged; its counts are lost, not the evaluations. The last
                // flush keeps the counts of a stopping process.
                let _ = flags.exposures().flush(&flush_pool).await;
                if stopping {
                    return;
                }
            }
        }));
        let sweeper = Sweeper::new(
            pool.clone(),
            bus.clone(),
            Duration::from_millis(settings.engine.sweep_after_ms),
            Duration::from_secs(settings.engine.sweep_horizon_hours * 3600),
        );
        background.push(tokio::spawn(
            sweeper.run(Duration::from_millis(settings.engine.sweep_interval_ms)),
        ));
        if let (Some(kapa), true) = (&kapa, settings.kapa_workers.in_process) {
            background.extend(crate::workers::spawn(
                pool.clone(),
                bus.clone(),
                kapa.clone(),
                &settings,
            ));
        }
        if settings.quality.in_process {
            background.push(crate::quality::spawn(
                pool.clone(),
                bus.clone(),
                Duration::from_millis(settings.quality.interval_ms.max(10)),
            ));
        }
        let bus = web::Data::from(bus);
        let engine_status = web::Data::new(EngineStatus { kapa });
        let prewarm = read_cache.enabled() && settings.read_cache.prewarm_lead_ms > 0;
        let hot_queries = Arc::new(crate::routes::analytics::HotQueries::new(prewarm));
        if prewarm {
            background.push(tokio::spawn(
                crate::routes::analytics::prewarm_every_minute(
                    TenantPool::clone(&reads),
                    read_cache.clone(),
                    hot_queries.clone(),
                    Duration::from_millis(settings.read_cache.prewarm_lead_ms),
                ),
            ));
        }
        let hot_queries = web::Data::from(hot_queries);
        let read_cache = web::Data::from(read_cache);
        let flag_settings = web::Data::new(settings.flags.clone());
        let identity_store = identity::store::IdentityStore::new(pool.clone());
        let auth = web::Data::new(Auth::new(
            token_keys,
            identity_store,
            bus.clone().into_inner(),
            settings.profile,
            settings.auth.clone(),
            settings.identity.operators(),
            PlatformCredential::new(settings.platform.operator_token.as_ref()),
        ));
        let purge_store = auth.store.clone();
        background.push(tokio::spawn(async move {
            let hour = Duration::from_secs(3600);
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
            loop {
                ticker.tick().await;
                match purge_store.purge(Duration::from_secs(30 * 24 * 3600)).await {
                    Ok(removed) => tracing::debug!(removed, "identity: expired rows purged"),
                    Err(error) => tracing::warn!(%error, "identity: could not purge expired rows"),
                }
            }
        }));
        let limiter = web::Data::new(
            crate::rate_limit::RateLimiter::new(settings.rate_limits.clone())
                .context("invalid rate_limits settings")?,
        );
        if settings.webhooks.in_process {
            let webhooks = Arc::new(
                crate::webhooks::Webhooks::new(
                    pool.clone(),
                    bus.clone().into_inner(),
                    settings.webhooks.clone(),
                )
                .context("could not set up webhook delivery")?,
            );
            background.push(webhooks.spawn(Duration::from_millis(settings.webhooks.interval_ms)));
        }
        if let Some(slis) = &slis {
            background.push(crate::slo::spawn(
                slis.clone(),
                pool.clone(),
                settings.kafka.clone(),
                metrics_on.then(|| metrics.clone()),
            ));
        }
        let slis = slis.map(web::Data::from);
        let slo_settings = web::Data::new(settings.slo.clone());
        let webhook_settings = web::Data::new(settings.webhooks.clone());
        let hardening = web::Data::new(crate::hardening::Hardening {
            hsts: settings.http.hsts,
            deadline: Duration::from_millis(settings.http.request_timeout_ms),
        });
        let origins = settings.http.origins();
        let providers = web::Data::new(
            identity::Providers::new(
                settings
                    .identity
                    .providers()
                    .map_err(|e| anyhow::anyhow!(e))?,
                Duration::from_millis(settings.identity.provider_timeout_ms),
            )
            .context("could not set up the identity providers' client")?,
        );
        let sign_in = web::Data::new(crate::sign_in::SignInSettings {
            totp_issuer: settings.identity.totp_issuer.clone(),
            development: settings.profile == Profile::Development,
        });
        // Off: no app data, so the middleware and every counter do nothing.
        let metrics = metrics_on.then(|| web::Data::from(metrics));
        let started = web::Data::new(routes::health::Started(std::time::Instant::now()));
        let lifecycle = Arc::new(crate::lifecycle::Lifecycle::default());
        let lifecycle_data = web::Data::from(lifecycle.clone());
        let health = web::Data::new(settings.health.clone());
        let log_settings = web::Data::new(settings.log.clone());
        let pool_data = web::Data::new(pool.clone());
        let tenant_data = web::Data::new(tenants.clone());
        let read_data = web::Data::new(reads.clone());
        let kafka = web::Data::new(settings.kafka.clone());
        let json_limit = settings.limits.json_body_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(crate::hardening::deadline))
                .wrap(from_fn(crate::rate_limit::guard))
                .wrap(crate::hardening::cors(&origins))
                .wrap(from_fn(crate::hardening::harden))
                .wrap(from_fn(middleware::refuse_nul))
                .wrap(from_fn(middleware::correlate))
                .wrap(from_fn(crate::lifecycle::gate))
                // Outermost: every answer is counted, refusals by the layers above included.
                .wrap(from_fn(crate::metrics::record))
                .app_data(
                    web::JsonConfig::default()
                        .limit(json_limit)
                        .error_handler(|err, _| problem::json_error(err).into()),
                )
                .app_data(
                    web::PathConfig::default()
                        .error_handler(|err, _| problem::path_error(err).into()),
                )
                .app_data(
                    web::QueryConfig::default()
                        .error_handler(|err, _| problem::query_error(err).into()),
                )
                .app_data(bus.clone())
                .app_data(auth.clone())
                .app_data(limiter.clone())
                .app_data(hardening.clone())
                .app_data(webhook_settings.clone())
                .app_data(providers.clone())
                .app_data(sign_in.clone())
                .app_data(pool_data.clone())
                .configure(|cfg| {
                    if let Some(metrics) = metrics.clone() {
                        cfg.app_data(metrics);
                    }
                    if let Some(slis) = slis.clone() {
                        cfg.app_data(slis);
                    }
                })
                .app_data(slo_settings.clone())
                .app_data(started.clone())
                .app_data(lifecycle_data.clone())
                .app_data(health.clone())
                .app_data(log_settings.clone())
                .app_data(tenant_data.clone())
                .app_data(read_data.clone())
                .app_data(kafka.clone())
                .app_data(engine_status.clone())
                .app_data(read_cache.clone())
                .app_data(hot_queries.clone())
                .app_data(flag_settings.clone())
                .configure(routes::configure)
                .default_service(web::to(routes::fallback::unmatched))
        })
        .client_request_timeout(Duration::from_millis(
            settings.http.client_request_timeout_ms,
        ))
        // The process's signals are ours (`run_until`): readiness must turn false first.
        .disable_signals()
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        tracing::info!(port, "listening");
        Ok(Self {
            port,
            pool,
            tenants,
            server: server.run(),
            stoppable,
            background,
            lifecycle,
            halt,
            shutdown: settings.shutdown.clone(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The owner's pool (migrations, the parts that cross tenants).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The API's pool, held to row-level security.
    pub fn tenant_pool(&self) -> &TenantPool {
        &self.tenants
    }

    /// Stops the server from elsewhere; every background task is then cut where it stands, as a
    /// crash would (tests). A graceful stop is [`Application::run_until`]'s.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through [`Application::handle`].
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `stop` resolves, then stops gracefully (docs/deployment.md):
    /// 1. readiness answers 503 (`draining`);
    /// 2. on SIGTERM, requests are still served for `shutdown.drain_ms`, while load balancers
    ///    take the instance out (SIGINT skips this);
    /// 3. new requests are refused (`shutting_down`, `Connection: close`) and the admitted ones
    ///    finish, within `shutdown.grace_ms`;
    /// 4. the relay and the projections finish their current batch (checkpoint included) and
    ///    give up their locks and partitions; the flag counts are flushed;
    /// 5. the server's workers stop, the remaining loops are cut and the pools closed.
    ///
    /// Stopped through [`Application::handle`] instead, every background task is cut at once.
    pub async fn run_until<F>(self, stop: F) -> std::io::Result<()>
    where
        F: std::future::Future<Output = shutdown::Signal>,
    {
        let Self {
            server,
            stoppable,
            background,
            lifecycle,
            halt,
            shutdown,
            pool,
            tenants,
            ..
        } = self;
        let handle = server.handle();
        let mut serving = tokio::spawn(server);
        let stopped = |joined: Result<std::io::Result<()>, tokio::task::JoinError>| {
            joined.unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        let signal = tokio::select! {
            joined = &mut serving => {
                for task in stoppable.iter().chain(&background) {
                    task.abort();
                }
                return stopped(joined);
            }
            signal = stop => signal,
        };
        let started = std::time::Instant::now();
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        lifecycle.drain();
        let drain = match signal {
            shutdown::Signal::Terminate => Duration::from_millis(shutdown.drain_ms),
            shutdown::Signal::Interrupt => Duration::ZERO,
        };
        tracing::info!(
            ?signal,
            drain_ms = drain.as_millis() as u64,
            "stopping: readiness fails; still serving while draining"
        );
        tokio::time::sleep(drain).await;
        let grace = Duration::from_millis(shutdown.grace_ms);
        let deadline = tokio::time::Instant::now() + grace;
        if lifecycle.close(grace).await {
            tracing::info!(
                elapsed_ms = elapsed_ms(),
                "closed: admitted requests answered"
            );
        } else {
            tracing::warn!(
                in_flight = lifecycle.in_flight(),
                grace_ms = shutdown.grace_ms,
                "requests still in flight at the end of the grace; cut"
            );
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if halt.stop_within(stoppable, left).await.is_none() {
            tracing::warn!(
                grace_ms = shutdown.grace_ms,
                "the relay or a projection did not stop within the grace; cut"
            );
        }
        handle.stop(false).await;
        let served = stopped(serving.await);
        for task in &background {
            task.abort();
        }
        pool.close().await;
        tenants.unscoped().close().await;
        tracing::info!(elapsed_ms = elapsed_ms(), "stopped");
        served
    }
}

/// Connects (creating the database first when allowed), failing with a message that says where
/// it tried and what to do, never with a panic.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let url = settings.url.expose_secret();
    let target = settings.redacted_url();
    let timeout = Duration::from_millis(settings.acquire_timeout_ms);
    if settings.create_if_missing {
        let exists = tokio::time::timeout(timeout, Postgres::database_exists(url))
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| unreachable_message(&target))?;
        if !exists {
            Postgres::create_database(url)
                .await
                .with_context(|| format!("could not create the database at {target}"))?;
            tracing::info!(database = %target, "created the database");
        }
    }
    let options = connect_options(settings, settings.statement_timeout_ms)?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .with_context(|| unreachable_message(&target))
}

/// The API's pool: the `api_username` login (or, in development, the owner's login switched to
/// `api_role`), acting as `api_role`, whose queries see one tenant's rows at a time.
pub async fn connect_api(settings: &DatabaseSettings) -> anyhow::Result<TenantPool> {
    let target = settings.redacted_url();
    let options = api_connect_options(settings, settings.url.expose_secret())?;
    let pool = api_pool_options(settings)
        .connect_with(options)
        .await
        .with_context(|| {
            format!(
                "could not connect the API's pool as role `{}` to {target}: does the role exist \
                 (the migrations create it) and may the login act as it? (docs/isolation.md)",
                settings.api_role
            )
        })?;
    Ok(TenantPool::new(pool))
}

/// The read routes' pool on `database.read_url` (a replica), with the API's login and role;
/// connected on first use, so that a replica down at start-up fails the reads only.
pub fn connect_read_replica(settings: &DatabaseSettings) -> anyhow::Result<Option<TenantPool>> {
    let Some(url) = &settings.read_url else {
        return Ok(None);
    };
    let options = api_connect_options(settings, url.expose_secret()).with_context(|| {
        format!(
            "database.read_url is not a valid URL ({})",
            settings.redacted_read_url().unwrap_or_default()
        )
    })?;
    Ok(Some(TenantPool::new(
        api_pool_options(settings).connect_lazy_with(options),
    )))
}

/// The API's connection options on `url`: its login, its statement timeout.
fn api_connect_options(
    settings: &DatabaseSettings,
    url: &str,
) -> anyhow::Result<sqlx::postgres::PgConnectOptions> {
    let mut options = sqlx::postgres::PgConnectOptions::from_str(url)
        .context("not a valid PostgreSQL URL")?
        .options([(
            "statement_timeout",
            format!("{}ms", settings.api_statement_timeout_ms),
        )]);
    if let Some(user) = &settings.api_username {
        options = options.username(user);
        options = match &settings.api_password {
            Some(password) => options.password(password.expose_secret()),
            None => options.password(""),
        };
    }
    Ok(options)
}

/// The API's pool settings: each connection acts as `api_role`.
fn api_pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    // Validated as a plain identifier (config), quoted all the same.
    let set_role = format!("SET ROLE \"{}\"", settings.api_role);
    PgPoolOptions::new()
        .max_connections(settings.api_max_connections)
        // sqlx checks a connection as it returns to the pool (flushing a dropped transaction's
        // ROLLBACK); checking it again on every acquire would add a round trip to each
        // transaction of every request. A connection that died while idle fails one request
        // (503) and is discarded.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .after_connect(move |conn, _meta| {
            let set_role = set_role.clone();
            Box::pin(async move {
                sqlx::Executor::execute(conn, set_role.as_str()).await?;
                Ok(())
            })
        })
}

/// Refuses to serve in production when the API's login could see past row-level security
/// (docs/isolation.md); in development, says so.
async fn check_isolation(tenants: &TenantPool, profile: Profile) -> anyhow::Result<()> {
    let reasons = event_store::bypass_reasons(tenants)
        .await
        .context("could not check the API's database role")?;
    if reasons.is_empty() {
        return Ok(());
    }
    let reasons = reasons.join("; ");
    if profile == Profile::Production {
        anyhow::bail!(
            "refusing to serve: the API's database login can bypass row-level security ({reasons}). \
             Set APP__DATABASE__API_USERNAME (and API_PASSWORD) to a login that is a member of \
             answers_api only (docs/isolation.md)"
        );
    }
    tracing::warn!(%reasons, "profile development: the API's database login can bypass row-level security; production refuses this");
    Ok(())
}

/// `database.url`'s connection options, with a role's `statement_timeout`.
fn connect_options(
    settings: &DatabaseSettings,
    statement_timeout_ms: u64,
) -> anyhow::Result<sqlx::postgres::PgConnectOptions> {
    Ok(
        sqlx::postgres::PgConnectOptions::from_str(settings.url.expose_secret())
            .with_context(|| {
                format!(
                    "database.url is not a valid URL ({})",
                    settings.redacted_url()
                )
            })?
            .options([("statement_timeout", format!("{statement_timeout_ms}ms"))]),
    )
}

fn unreachable_message(target: &str) -> String {
    format!(
        "cannot reach PostgreSQL at {target}. Is it running? Set APP__DATABASE__URL to point \
         elsewhere (see README, Configuration)"
    )
}

/// Starts every projection on the embedded transport: each follows the event store in
/// commit-safe order from the checkpoint kept in its status, moved with each apply.
pub fn spawn_embedded(
    pool: &PgPool,
    embedded: &crate::config::EmbeddedSettings,
    stall_after: Duration,
    halt: &shutdown::Shutdown,
) -> Vec<JoinHandle<()>> {
    projections::all()
        .into_iter()
        .map(|projection| {
            let source = projections::StoreFollower::for_projection(
                pool.clone(),
                projection.as_ref(),
                embedded.batch_size,
                Duration::from_millis(embedded.idle_ms),
            );
            let runner = projections::ProjectionRunner::new(pool.clone(), projection, source)
                .with_stall_detection(stall_after)
                .with_shutdown(halt.clone());
            tokio::spawn(runner.run_supervised())
        })
        .collect()
}

/// Every topic the relay writes to.
pub fn topics(kafka: &KafkaSettings) -> Vec<String> {
    let mut topics: Vec<String> = domain::AggregateType::ALL
        .iter()
        .map(|t| kafka.topic(t.as_str()))
        .collect();
    topics.push(kafka.dead_letter_topic());
    topics
}

/// Starts the relay and the projections inside this process, as configured. Neither needs the
/// broker to be up now: they create the topics and connect when it answers, and retry after
/// every failure. Commands never wait for them.
pub fn spawn_streaming(
    pool: &PgPool,
    kafka: &KafkaSettings,
    metrics: Option<&crate::metrics::Metrics>,
    stall_after: Duration,
    halt: &shutdown::Shutdown,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    if kafka.relay.in_process {
        let relay = run_relay(pool.clone(), kafka.clone(), metrics, halt.clone())?;
        // A fatal relay error is logged by the relay; commands go on being stored, and the
        // status route shows the relay no longer moving.
        tasks.push(tokio::spawn(async move {
            let _ = relay.await;
        }));
    }
    if kafka.projections_in_process {
        for projection in projections::all() {
            let source = streaming::KafkaSource::for_projection(
                kafka.clone(),
                pool.clone(),
                projection.as_ref(),
            );
            let runner = projections::ProjectionRunner::new(pool.clone(), projection, source)
                .with_stall_detection(stall_after)
                .with_shutdown(halt.clone());
            tasks.push(tokio::spawn(runner.run_supervised()));
        }
    }
    Ok(tasks)
}

/// The relay as a future: topics first (retried until the broker answers), then publishing
/// until a fatal error, which it yields, or until `halt` (after its current batch).
pub fn run_relay(
    pool: PgPool,
    kafka: KafkaSettings,
    metrics: Option<&crate::metrics::Metrics>,
    halt: shutdown::Shutdown,
) -> anyhow::Result<impl std::future::Future<Output = Result<(), streaming::RelayError>> + Send> {
    let relay = Relay::new(pool, kafka.clone()).context("invalid Kafka producer configuration")?;
    if let Some(metrics) = metrics {
        metrics
            .adopt(|| relay.collectors())
            .context("could not register the relay's metrics")?;
    }
    Ok(async move {
        let topics = topics(&kafka);
        while let Err(e) = streaming::ensure_topics(&kafka, &topics).await {
            tracing::warn!(error = %e, brokers = %kafka.bootstrap_servers, "cannot create the topics yet; retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = halt.stopping() => return Ok(()),
            }
        }
        relay.run(halt).await
    })
}
