//! The analytics of one tenant over a window, computed from the `questions` read model
//! (docs/analytics.md defines every figure).
use chrono::{DateTime, Utc};
use domain::TenantId;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

/// The period and buckets an analytics request asks for.
#[derive(Debug, Clone)]
pub struct Window {
    /// Start, inclusive.
    pub from: DateTime<Utc>,
    /// End, exclusive.
    pub to: DateTime<Utc>,
    /// `hour`, `day` or `week` (ISO weeks, starting Monday).
    pub bucket: String,
    /// An IANA time zone; buckets start at local midnight / local hour.
    pub tz: String,
}

/// How many of one kind.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Count {
    /// The kind (a channel, an intent, a URL...).
    pub key: String,
    /// How many.
    pub count: i64,
}

/// One bucket of the volume chart.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct VolumePoint {
    /// Local start of the bucket in the requested time zone (`YYYY-MM-DDTHH:MM:SS`).
    pub bucket_start: String,
    /// Questions asked in the bucket.
    pub questions: i64,
    /// Distinct users who asked in the bucket.
    pub unique_users: i64,
}

/// The window's totals.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Totals {
    /// Questions asked.
    pub questions: i64,
    /// Distinct users who asked.
    pub unique_users: i64,
    /// Users who asked at least twice in the window.
    pub active_users: i64,
    /// Conversations with a question in the window.
    pub conversations: i64,
}

/// How questions ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Outcomes {
    /// Answered and not uncertain.
    pub answered: i64,
    /// Answered, but the engine was not sure.
    pub uncertain: i64,
    /// The engine failed.
    pub failed: i64,
    /// A guardrail blocked them.
    pub blocked: i64,
    /// Not answered yet.
    pub pending: i64,
    /// An answer came, but the tenant's output guardrails withheld it.
    pub withheld: i64,
    /// Answered from the tenant's earlier upvoted answers because the engine could not.
    pub fallback: i64,
    /// Answered with a recent upvoted answer to the identical question (no engine call).
    pub reused: i64,
    /// From the question to the resolution of its conversation, over resolved questions.
    pub resolution_p50_ms: Option<f64>,
    /// 95th percentile of the time to resolution.
    pub resolution_p95_ms: Option<f64>,
    /// Until the first chunk of a streamed answer, over streamed answers.
    pub first_chunk_p50_ms: Option<f64>,
    /// 95th percentile of the time to the first chunk.
    pub first_chunk_p95_ms: Option<f64>,
    /// Over every answered question (certain or not).
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile of the engine's latency.
    pub latency_p95_ms: Option<f64>,
}

/// What users said of the answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedbackStats {
    /// Upvotes given.
    pub upvotes: i64,
    /// Downvotes given.
    pub downvotes: i64,
    /// Answered questions with at least one reaction.
    pub rated_questions: i64,
    /// rated_questions / answered questions (certain or not).
    pub feedback_rate: Option<f64>,
    /// upvotes / (upvotes + downvotes).
    pub satisfaction: Option<f64>,
    /// Why answers were downvoted, by reason.
    pub downvote_reasons: Vec<Count>,
}

/// From asked to resolved.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Funnel {
    /// Questions asked.
    pub asked: i64,
    /// Answered (certain or not).
    pub answered: i64,
    /// Answered questions with at least one reaction.
    pub rated: i64,
    /// Questions with at least one upvote.
    pub upvoted: i64,
    /// Questions whose conversation was resolved.
    pub resolved: i64,
    /// Conversations handed to a person.
    pub escalated_conversations: i64,
    /// 1 - escalated conversations / conversations.
    pub deflection_rate: Option<f64>,
}

/// A question asked often.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct TopQuestion {
    /// The normalised text the questions share.
    pub question: String,
    /// How often.
    pub count: i64,
    /// One of the original texts.
    pub example: String,
}

/// A topic the knowledge does not cover well.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct CoverageGap {
    /// The topic (`(none)` when none was found).
    pub topic: String,
    /// Uncertain or downvoted questions on the topic.
    pub questions: i64,
    /// Up to three of them.
    pub examples: Vec<String>,
}

/// Every dashboard figure of one tenant for one window (docs/analytics.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Analytics {
    /// Start of the window, inclusive.
    pub from: DateTime<Utc>,
    /// End of the window, exclusive.
    pub to: DateTime<Utc>,
    /// `hour`, `day` or `week`.
    pub bucket: String,
    /// The IANA time zone of the buckets.
    pub time_zone: String,
    /// Totals over the window.
    pub totals: Totals,
    /// Questions and users per bucket.
    pub volume: Vec<VolumePoint>,
    /// Questions per channel.
    pub by_channel: Vec<Count>,
    /// Questions per Kapa integration.
    pub by_integration: Vec<Count>,
    /// How questions ended, and the engine's latency.
    pub outcomes: Outcomes,
    /// Reactions and their reasons.
    pub feedback: FeedbackStats,
    /// From asked to resolved.
    pub funnel: Funnel,
    /// Questions per intent.
    pub intents: Vec<Count>,
    /// The topics asked about most.
    pub top_topics: Vec<Count>,
    /// The questions asked most.
    pub top_questions: Vec<TopQuestion>,
    /// Topics with uncertain or downvoted answers.
    pub coverage_gaps: Vec<CoverageGap>,
    /// The knowledge cited most.
    pub most_cited_sources: Vec<Count>,
    /// The knowledge cited by downvoted answers.
    pub downvoted_sources: Vec<Count>,
}

const IN_WINDOW: &str =
    "FROM rm_questions WHERE tenant_id = $1 AND asked_at >= $2 AND asked_at < $3";

/// A query over the window's questions: binds the tenant and the window as $1, $2, $3.
fn in_window<'q, T>(
    sql: &'q str,
    tenant: &'q TenantId,
    w: &'q Window,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    sqlx::query_as(sql).bind(tenant).bind(w.from).bind(w.to)
}

/// The window's totals, one row.
#[derive(sqlx::FromRow)]
struct WindowTotals {
    questions: i64,
    users: i64,
    conversations: i64,
    answered: i64,
    uncertain: i64,
    failed: i64,
    blocked: i64,
    pending: i64,
    p50: Option<f64>,
    p95: Option<f64>,
    withheld: i64,
    fallback: i64,
    reused: i64,
    resolution_p50: Option<f64>,
    resolution_p95: Option<f64>,
    first_chunk_p50: Option<f64>,
    first_chunk_p95: Option<f64>,
    up: i64,
    down: i64,
    rated: i64,
    upvoted: i64,
    resolved: i64,
    escalated: i64,
}

/// The database's IANA time zones, read once per process: `pg_timezone_names` reads the time
/// zone files on every query (25 ms of the server's CPU each, measured), which made the check
/// the most expensive part of an analytics request answered from the read cache.
static TIME_ZONES: tokio::sync::OnceCell<std::collections::HashSet<String>> =
    tokio::sync::OnceCell::const_new();

/// Whether the database knows `tz` as an IANA time zone.
pub async fn valid_time_zone(conn: &mut PgConnection, tz: &str) -> Result<bool, sqlx::Error> {
    let zones = TIME_ZONES
        .get_or_try_init(|| async {
            let names: Vec<String> = sqlx::query_scalar("SELECT name FROM pg_timezone_names")
                .fetch_all(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(names.into_iter().collect())
        })
        .await?;
    Ok(zones.contains(tz))
}

async fn counts(
    conn: &mut PgConnection,
    tenant: &TenantId,
    w: &Window,
    select_key: &str,
    extra: &str,
    limit: i64,
) -> Result<Vec<Count>, sqlx::Error> {
    in_window(
        &format!(
            "SELECT key::text AS key, count(*) AS count FROM (SELECT {select_key} AS key {IN_WINDOW} {extra}) k \
         WHERE key IS NOT NULL GROUP BY key ORDER BY count DESC, key LIMIT $4"
        ),
        tenant,
        w,
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}

fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Every figure of `tenant` for the window.
pub async fn compute(
    conn: &mut PgConnection,
    tenant: &TenantId,
    w: &Window,
) -> Result<Analytics, sqlx::Error> {
    let t: WindowTotals = in_window(&format!(
        "SELECT count(*) AS questions, count(DISTINCT asked_by) AS users, count(DISTINCT conversation_id) AS conversations, \
           count(*) FILTER (WHERE status = 'answered' AND NOT uncertain) AS answered, \
           count(*) FILTER (WHERE status = 'answered' AND uncertain) AS uncertain, \
           count(*) FILTER (WHERE status = 'failed') AS failed, \
           count(*) FILTER (WHERE status = 'blocked') AS blocked, \
           count(*) FILTER (WHERE status = 'pending') AS pending, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE status = 'answered') AS p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE status = 'answered') AS p95, \
           count(*) FILTER (WHERE status = 'withheld') AS withheld, \
           count(*) FILTER (WHERE status = 'answered' AND engine = 'fallback') AS fallback, \
           count(*) FILTER (WHERE status = 'answered' AND engine = 'reuse') AS reused, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - asked_at) * 1000) \
             FILTER (WHERE resolved_at IS NOT NULL) AS resolution_p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - asked_at) * 1000) \
             FILTER (WHERE resolved_at IS NOT NULL) AS resolution_p95, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY first_chunk_ms) AS first_chunk_p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY first_chunk_ms) AS first_chunk_p95, \
           coalesce(sum(upvotes), 0)::bigint AS up, coalesce(sum(downvotes), 0)::bigint AS down, \
           count(*) FILTER (WHERE status = 'answered' AND upvotes + downvotes > 0) AS rated, \
           count(*) FILTER (WHERE upvotes > 0) AS upvoted, \
           count(*) FILTER (WHERE resolved) AS resolved, \
           count(DISTINCT conversation_id) FILTER (WHERE escalated) AS escalated \
         {IN_WINDOW}"
    ), tenant, w)
    .fetch_one(&mut *conn)
    .await?;
    let active_users: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT asked_by {IN_WINDOW} GROUP BY asked_by HAVING count(*) >= 2) a"
    ))
    .bind(tenant)
    .bind(w.from)
    .bind(w.to)
    .fetch_one(&mut *conn)
    .await?;
    let volume: Vec<VolumePoint> = in_window(&format!(
        "SELECT to_char(date_trunc($4, asked_at AT TIME ZONE $5), 'YYYY-MM-DD\"T\"HH24:MI:SS') AS bucket_start, \
           count(*) AS questions, count(DISTINCT asked_by) AS unique_users {IN_WINDOW} GROUP BY 1 ORDER BY 1"
    ), tenant, w)
    .bind(&w.bucket)
    .bind(&w.tz)
    .fetch_all(&mut *conn)
    .await?;
    let top_questions: Vec<TopQuestion> = in_window(
        &format!(
            "SELECT normalized AS question, count(*) AS count, min(text) AS example {IN_WINDOW} \
         GROUP BY normalized ORDER BY count DESC, normalized LIMIT 10"
        ),
        tenant,
        w,
    )
    .fetch_all(&mut *conn)
    .await?;
    let coverage_gaps: Vec<CoverageGap> = in_window(
        &format!(
            "SELECT coalesce(topic, '(none)') AS topic, count(*) AS questions, \
           (array_agg(text ORDER BY asked_at))[1:3] AS examples {IN_WINDOW} \
           AND status = 'answered' AND (uncertain OR downvotes > 0) \
         GROUP BY 1 ORDER BY questions DESC, topic LIMIT 10"
        ),
        tenant,
        w,
    )
    .fetch_all(&mut *conn)
    .await?;

    let WindowTotals {
        questions,
        answered,
        uncertain,
        up,
        down,
        rated,
        conversations,
        escalated,
        ..
    } = t;
    Ok(Analytics {
        from: w.from,
        to: w.to,
        bucket: w.bucket.clone(),
        time_zone: w.tz.clone(),
        totals: Totals {
            questions,
            unique_users: t.users,
            active_users,
            conversations,
        },
        volume,
        by_channel: counts(&mut *conn, tenant, w, "channel", "", 50).await?,
        by_integration: counts(&mut *conn, tenant, w, "integration_id", "", 50).await?,
        outcomes: Outcomes {
            answered,
            uncertain,
            failed: t.failed,
            blocked: t.blocked,
            pending: t.pending,
            withheld: t.withheld,
            fallback: t.fallback,
            reused: t.reused,
            resolution_p50_ms: t.resolution_p50,
            resolution_p95_ms: t.resolution_p95,
            first_chunk_p50_ms: t.first_chunk_p50,
            first_chunk_p95_ms: t.first_chunk_p95,
            latency_p50_ms: t.p50,
            latency_p95_ms: t.p95,
        },
        feedback: FeedbackStats {
            upvotes: up,
            downvotes: down,
            rated_questions: rated,
            feedback_rate: ratio(rated, answered + uncertain),
            satisfaction: ratio(up, up + down),
            downvote_reasons: counts(&mut *conn, tenant, w, "unnest(downvote_reasons)", "", 10)
                .await?,
        },
        funnel: Funnel {
            asked: questions,
            answered: answered + uncertain,
            rated,
            upvoted: t.upvoted,
            resolved: t.resolved,
            escalated_conversations: escalated,
            deflection_rate: ratio(conversations - escalated, conversations),
        },
        intents: counts(&mut *conn, tenant, w, "intent", "", 10).await?,
        top_topics: counts(&mut *conn, tenant, w, "topic", "", 10).await?,
        top_questions,
        coverage_gaps,
        most_cited_sources: counts(&mut *conn, tenant, w, "unnest(cited_sources)", "", 10).await?,
        downvoted_sources: counts(
            &mut *conn,
            tenant,
            w,
            "unnest(cited_sources)",
            "AND downvotes > 0",
            10,
        )
        .await?,
    })
}

/// What one period cost: the basis of cost allocation.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct CostRow {
    /// Local start of the period in the requested time zone.
    pub period_start: String,
    /// Questions asked.
    pub questions: i64,
    /// Questions sent to the answer engine: answered by it, withheld after it answered, failed,
    /// or answered by the fallback after it failed. Blocked and reused questions never reach it.
    pub engine_calls: i64,
    /// Questions the engine did not answer (some answered by the fallback instead).
    pub engine_failures: i64,
    /// Answered by the fallback from earlier upvoted answers.
    pub fallbacks: i64,
    /// Answered by reusing an upvoted answer to the identical question: engine calls saved.
    pub reused: i64,
    /// Findings the guardrails redacted from questions and answers.
    pub redactions: i64,
    /// Characters of the questions asked.
    pub characters_in: i64,
    /// Characters the engine answered with.
    pub characters_out: i64,
    /// Knowledge-source syncs started (from the audit trail).
    pub sync_runs: i64,
}

/// Cost allocation per period (bucket) for the tenant.
pub async fn cost(
    conn: &mut PgConnection,
    tenant: &TenantId,
    w: &Window,
) -> Result<Vec<CostRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH q AS (SELECT to_char(date_trunc($4, asked_at AT TIME ZONE $5), 'YYYY-MM-DD\"T\"HH24:MI:SS') AS p, \
                      count(*) AS questions, \
                      count(*) FILTER (WHERE status IN ('answered', 'failed', 'withheld') AND coalesce(engine, '') <> 'reuse') AS calls, \
                      count(*) FILTER (WHERE status = 'failed' OR engine = 'fallback') AS failures, \
                      count(*) FILTER (WHERE status = 'answered' AND engine = 'fallback') AS fallbacks, \
                      count(*) FILTER (WHERE status = 'answered' AND engine = 'reuse') AS reused, \
                      coalesce(sum((SELECT sum(value::bigint) FROM jsonb_each_text(redactions))), 0)::bigint AS redactions, \
                      coalesce(sum(question_chars), 0)::bigint AS chars_in, coalesce(sum(answer_chars), 0)::bigint AS chars_out \
                    FROM rm_questions WHERE tenant_id = $1 AND asked_at >= $2 AND asked_at < $3 GROUP BY 1), \
              s AS (SELECT to_char(date_trunc($4, recorded_at AT TIME ZONE $5), 'YYYY-MM-DD\"T\"HH24:MI:SS') AS p, \
                      count(*) AS syncs FROM rm_audit WHERE tenant_id = $1 AND action = 'SyncStarted' \
                      AND recorded_at >= $2 AND recorded_at < $3 GROUP BY 1) \
         SELECT coalesce(q.p, s.p) AS period_start, coalesce(q.questions, 0) AS questions, \
           coalesce(q.calls, 0) AS engine_calls, coalesce(q.failures, 0) AS engine_failures, \
           coalesce(q.fallbacks, 0) AS fallbacks, coalesce(q.reused, 0) AS reused, \
           coalesce(q.redactions, 0) AS redactions, coalesce(q.chars_in, 0) AS characters_in, \
           coalesce(q.chars_out, 0) AS characters_out, coalesce(s.syncs, 0) AS sync_runs \
         FROM q FULL JOIN s ON q.p = s.p ORDER BY 1",
    )
    .bind(tenant)
    .bind(w.from)
    .bind(w.to)
    .bind(&w.bucket)
    .bind(&w.tz)
    .fetch_all(&mut *conn)
    .await
}

/// The header line of the cost report as CSV.
pub const COST_CSV_HEADER: &str =
    "period_start,questions,engine_calls,engine_failures,fallbacks,reused,redactions,characters_in,characters_out,sync_runs\n";

impl CostRow {
    /// The row as a CSV line.
    pub fn csv_line(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            self.period_start,
            self.questions,
            self.engine_calls,
            self.engine_failures,
            self.fallbacks,
            self.reused,
            self.redactions,
            self.characters_in,
            self.characters_out,
            self.sync_runs
        )
    }
}
