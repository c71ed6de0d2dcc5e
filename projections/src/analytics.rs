//! The analytics of one tenant over a window, computed from the `questions` read model
//! (docs/analytics.md defines every figure).
use chrono::{DateTime, Utc};
use domain::TenantId;
use serde::Serialize;
use sqlx::{PgPool, Row};
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `hour`, `day` or `week` (ISO weeks, starting Monday).
    pub bucket: String,
    /// An IANA time zone; buckets start at local midnight / local hour.
    pub tz: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Count {
    pub key: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VolumePoint {
    /// Local start of the bucket in the requested time zone (`YYYY-MM-DDTHH:MM:SS`).
    pub bucket_start: String,
    pub questions: i64,
    pub unique_users: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Totals {
    pub questions: i64,
    pub unique_users: i64,
    /// Users who asked at least twice in the window.
    pub active_users: i64,
    pub conversations: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Outcomes {
    /// Answered and not uncertain.
    pub answered: i64,
    /// Answered, but the engine was not sure.
    pub uncertain: i64,
    pub failed: i64,
    pub blocked: i64,
    pub pending: i64,
    /// Over every answered question (certain or not).
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedbackStats {
    pub upvotes: i64,
    pub downvotes: i64,
    /// Answered questions with at least one reaction.
    pub rated_questions: i64,
    /// rated_questions / answered questions (certain or not).
    pub feedback_rate: Option<f64>,
    /// upvotes / (upvotes + downvotes).
    pub satisfaction: Option<f64>,
    pub downvote_reasons: Vec<Count>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Funnel {
    pub asked: i64,
    /// Answered (certain or not).
    pub answered: i64,
    pub rated: i64,
    pub upvoted: i64,
    /// Questions whose conversation was resolved.
    pub resolved: i64,
    pub escalated_conversations: i64,
    /// 1 - escalated conversations / conversations.
    pub deflection_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopQuestion {
    /// The normalised text the questions share.
    pub question: String,
    pub count: i64,
    /// One of the original texts.
    pub example: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CoverageGap {
    pub topic: String,
    /// Uncertain or downvoted questions on the topic.
    pub questions: i64,
    /// Up to three of them.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Analytics {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket: String,
    pub time_zone: String,
    pub totals: Totals,
    pub volume: Vec<VolumePoint>,
    pub by_channel: Vec<Count>,
    pub by_integration: Vec<Count>,
    pub outcomes: Outcomes,
    pub feedback: FeedbackStats,
    pub funnel: Funnel,
    pub intents: Vec<Count>,
    pub top_topics: Vec<Count>,
    pub top_questions: Vec<TopQuestion>,
    pub coverage_gaps: Vec<CoverageGap>,
    pub most_cited_sources: Vec<Count>,
    pub downvoted_sources: Vec<Count>,
}

const IN_WINDOW: &str =
    "FROM rm_questions WHERE tenant_id = $1 AND asked_at >= $2 AND asked_at < $3";

/// A query over the window's questions: binds the tenant and the window as $1, $2, $3.
fn in_window<'q>(
    sql: &'q str,
    tenant: &'q TenantId,
    w: &'q Window,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql).bind(tenant).bind(w.from).bind(w.to)
}

pub async fn valid_time_zone(pool: &PgPool, tz: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
        .bind(tz)
        .fetch_one(pool)
        .await
}

async fn counts(
    pool: &PgPool,
    tenant: &TenantId,
    w: &Window,
    select_key: &str,
    extra: &str,
    limit: i64,
) -> Result<Vec<Count>, sqlx::Error> {
    let rows = in_window(
        &format!(
            "SELECT key, count(*) AS n FROM (SELECT {select_key} AS key {IN_WINDOW} {extra}) k \
         WHERE key IS NOT NULL GROUP BY key ORDER BY n DESC, key LIMIT $4"
        ),
        tenant,
        w,
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Count {
            key: r.get("key"),
            count: r.get("n"),
        })
        .collect())
}

fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

pub async fn compute(
    pool: &PgPool,
    tenant: &TenantId,
    w: &Window,
) -> Result<Analytics, sqlx::Error> {
    let t = in_window(&format!(
        "SELECT count(*) AS questions, count(DISTINCT asked_by) AS users, count(DISTINCT conversation_id) AS conversations, \
           count(*) FILTER (WHERE status = 'answered' AND NOT uncertain) AS answered, \
           count(*) FILTER (WHERE status = 'answered' AND uncertain) AS uncertain, \
           count(*) FILTER (WHERE status = 'failed') AS failed, \
           count(*) FILTER (WHERE status = 'blocked') AS blocked, \
           count(*) FILTER (WHERE status = 'pending') AS pending, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE status = 'answered') AS p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE status = 'answered') AS p95, \
           coalesce(sum(upvotes), 0)::bigint AS up, coalesce(sum(downvotes), 0)::bigint AS down, \
           count(*) FILTER (WHERE status = 'answered' AND upvotes + downvotes > 0) AS rated, \
           count(*) FILTER (WHERE upvotes > 0) AS upvoted, \
           count(*) FILTER (WHERE resolved) AS resolved, \
           count(DISTINCT conversation_id) FILTER (WHERE escalated) AS escalated \
         {IN_WINDOW}"
    ), tenant, w)
    .fetch_one(pool)
    .await?;
    let active_users: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT asked_by {IN_WINDOW} GROUP BY asked_by HAVING count(*) >= 2) a"
    ))
    .bind(tenant)
    .bind(w.from)
    .bind(w.to)
    .fetch_one(pool)
    .await?;
    let volume = in_window(&format!(
        "SELECT to_char(date_trunc($4, asked_at AT TIME ZONE $5), 'YYYY-MM-DD\"T\"HH24:MI:SS') AS b, \
           count(*) AS n, count(DISTINCT asked_by) AS u {IN_WINDOW} GROUP BY b ORDER BY b"
    ), tenant, w)
    .bind(&w.bucket)
    .bind(&w.tz)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| VolumePoint { bucket_start: r.get("b"), questions: r.get("n"), unique_users: r.get("u") })
    .collect();
    let top_questions = in_window(
        &format!(
            "SELECT normalized, count(*) AS n, min(text) AS example {IN_WINDOW} \
         GROUP BY normalized ORDER BY n DESC, normalized LIMIT 10"
        ),
        tenant,
        w,
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| TopQuestion {
        question: r.get("normalized"),
        count: r.get("n"),
        example: r.get("example"),
    })
    .collect();
    let coverage_gaps = in_window(
        &format!(
            "SELECT coalesce(topic, '(none)') AS topic, count(*) AS n, \
           (array_agg(text ORDER BY asked_at))[1:3] AS examples {IN_WINDOW} \
           AND status = 'answered' AND (uncertain OR downvotes > 0) \
         GROUP BY 1 ORDER BY n DESC, topic LIMIT 10"
        ),
        tenant,
        w,
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| CoverageGap {
        topic: r.get("topic"),
        questions: r.get("n"),
        examples: r.get("examples"),
    })
    .collect();

    let questions: i64 = t.get("questions");
    let answered: i64 = t.get("answered");
    let uncertain: i64 = t.get("uncertain");
    let (up, down, rated): (i64, i64, i64) = (t.get("up"), t.get("down"), t.get("rated"));
    let conversations: i64 = t.get("conversations");
    let escalated: i64 = t.get("escalated");
    Ok(Analytics {
        from: w.from,
        to: w.to,
        bucket: w.bucket.clone(),
        time_zone: w.tz.clone(),
        totals: Totals {
            questions,
            unique_users: t.get("users"),
            active_users,
            conversations,
        },
        volume,
        by_channel: counts(pool, tenant, w, "channel", "", 50).await?,
        by_integration: counts(pool, tenant, w, "integration_id", "", 50).await?,
        outcomes: Outcomes {
            answered,
            uncertain,
            failed: t.get("failed"),
            blocked: t.get("blocked"),
            pending: t.get("pending"),
            latency_p50_ms: t.get("p50"),
            latency_p95_ms: t.get("p95"),
        },
        feedback: FeedbackStats {
            upvotes: up,
            downvotes: down,
            rated_questions: rated,
            feedback_rate: ratio(rated, answered + uncertain),
            satisfaction: ratio(up, up + down),
            downvote_reasons: counts(pool, tenant, w, "unnest(downvote_reasons)", "", 10).await?,
        },
        funnel: Funnel {
            asked: questions,
            answered: answered + uncertain,
            rated,
            upvoted: t.get("upvoted"),
            resolved: t.get("resolved"),
            escalated_conversations: escalated,
            deflection_rate: ratio(conversations - escalated, conversations),
        },
        intents: counts(pool, tenant, w, "intent", "", 10).await?,
        top_topics: counts(pool, tenant, w, "topic", "", 10).await?,
        top_questions,
        coverage_gaps,
        most_cited_sources: counts(pool, tenant, w, "unnest(cited_sources)", "", 10).await?,
        downvoted_sources: counts(
            pool,
            tenant,
            w,
            "unnest(cited_sources)",
            "AND downvotes > 0",
            10,
        )
        .await?,
    })
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CostRow {
    /// Local start of the period in the requested time zone.
    pub period_start: String,
    pub questions: i64,
    /// Calls to the answer engine (answered or failed; blocked questions never reach it).
    pub engine_calls: i64,
    pub characters_in: i64,
    pub characters_out: i64,
    /// Knowledge-source syncs started (from the audit trail).
    pub sync_runs: i64,
}

/// Cost allocation per period (bucket) for the tenant.
pub async fn cost(
    pool: &PgPool,
    tenant: &TenantId,
    w: &Window,
) -> Result<Vec<CostRow>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH q AS (SELECT to_char(date_trunc($4, asked_at AT TIME ZONE $5), 'YYYY-MM-DD\"T\"HH24:MI:SS') AS p, \
                      count(*) AS questions, count(*) FILTER (WHERE status IN ('answered', 'failed')) AS calls, \
                      coalesce(sum(question_chars), 0)::bigint AS chars_in, coalesce(sum(answer_chars), 0)::bigint AS chars_out \
                    FROM rm_questions WHERE tenant_id = $1 AND asked_at >= $2 AND asked_at < $3 GROUP BY 1), \
              s AS (SELECT to_char(date_trunc($4, recorded_at AT TIME ZONE $5), 'YYYY-MM-DD\"T\"HH24:MI:SS') AS p, \
                      count(*) AS syncs FROM rm_audit WHERE tenant_id = $1 AND action = 'SyncStarted' \
                      AND recorded_at >= $2 AND recorded_at < $3 GROUP BY 1) \
         SELECT coalesce(q.p, s.p) AS p, coalesce(q.questions, 0) AS questions, coalesce(q.calls, 0) AS calls, \
           coalesce(q.chars_in, 0) AS chars_in, coalesce(q.chars_out, 0) AS chars_out, coalesce(s.syncs, 0) AS syncs \
         FROM q FULL JOIN s ON q.p = s.p ORDER BY 1",
    )
    .bind(tenant)
    .bind(w.from)
    .bind(w.to)
    .bind(&w.bucket)
    .bind(&w.tz)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| CostRow {
            period_start: r.get("p"),
            questions: r.get("questions"),
            engine_calls: r.get("calls"),
            characters_in: r.get("chars_in"),
            characters_out: r.get("chars_out"),
            sync_runs: r.get("syncs"),
        })
        .collect())
}

pub const COST_CSV_HEADER: &str =
    "period_start,questions,engine_calls,characters_in,characters_out,sync_runs\n";

impl CostRow {
    pub fn csv_line(&self) -> String {
        format!(
            "{},{},{},{},{},{}\n",
            self.period_start,
            self.questions,
            self.engine_calls,
            self.characters_in,
            self.characters_out,
            self.sync_runs
        )
    }
}
