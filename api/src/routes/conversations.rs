use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use commands::{AskQuestion, CommandBus, CommandOutcome};
use domain::conversation::ConversationCommand;
use domain::Code;
use projections::conversations::queries::ReactionFilter;
use projections::conversations::{
    self, ConversationDetail, ConversationState, ConversationSummary, Conversations,
};
use projections::intent::Intent;
use projections::{Folded, Freshness};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::{end_read, tenant_tx};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Authenticated;

use crate::dto::*;
use crate::problem::ApiError;
use crate::routes::{answer_stream, parse_word, Caller, CommandProblems};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(start)
        .service(list)
        .service(get_one)
        .service(follow_up)
        .service(feedback)
        .service(resolve)
        .service(escalate);
}

fn question(body: &AskRequest) -> AskQuestion {
    AskQuestion {
        text: body.question.clone(),
        channel: body.channel.clone().unwrap_or_else(|| "api".into()),
        integration_id: body.integration_id.clone(),
    }
}

/// Every question costs an engine call: the question budgets of the user and of the tenant's
/// plan (docs/security.md) are drawn on before anything is recorded.
async fn question_budget(req: &HttpRequest, caller: &Caller) -> Result<(), ApiError> {
    let (Some(limiter), Some(auth)) = (
        req.app_data::<web::Data<crate::rate_limit::RateLimiter>>(),
        req.app_data::<web::Data<crate::auth::Auth>>(),
    ) else {
        return Ok(());
    };
    let plan = auth.tenant(&caller.claims.tenant_id).await?.plan;
    limiter.question(req, &caller.claims, plan).await?;
    crate::metrics::count_question(req, caller.claims.tenant_id.as_str());
    Ok(())
}

/// Ask the first question of a new conversation. Answers with the recorded answer
/// (`answer.status` is `answered`, `failed`, `blocked` or `withheld`; `pending` only for a
/// replay while the first request still runs). With `Accept: text/event-stream` the answer
/// streams as Server-Sent Events: `chunk` events (`{"text"}`) as they arrive, then one `answer`
/// event with this same outcome (or an `error` event with a problem).
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", request_body = AskRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 201, body = CommandOutcome),
              (status = 200, description = "With `Accept: text/event-stream`: `event: chunk` (`data: {\"text\": ...}`) repeated, then `event: answer` (`data:` the CommandOutcome) or `event: error` (`data:` a problem)", content_type = "text/event-stream", body = String),
              CommandProblems), security(("bearer" = [])))]
#[post("/conversations")]
pub async fn start(
    req: HttpRequest,
    bus: web::Data<CommandBus>,
    caller: Caller,
    body: web::Json<AskRequest>,
) -> Result<HttpResponse, ApiError> {
    question_budget(&req, &caller).await?;
    let ctx = caller.context(&*body);
    if answer_stream::streams(&req, &bus, &ctx).await {
        return answer_stream::respond(&req, bus, ctx, Uuid::now_v7(), false, question(&body))
            .await;
    }
    let outcome = bus
        .ask(&ctx, Uuid::now_v7(), false, question(&body), None)
        .await?;
    crate::metrics::count_answer(&req, &outcome);
    Ok(HttpResponse::Created().json(outcome))
}

/// Ask a follow-up question in an open conversation.
#[utoipa::path(post, path = "/v1/conversations/{id}/questions", tag = "conversations", request_body = AskRequest,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome,
               description = "The recorded answer; with `Accept: text/event-stream`, the same Server-Sent Events as `POST /v1/conversations`"),
              CommandProblems), security(("bearer" = [])))]
#[post("/conversations/{id}/questions")]
pub async fn follow_up(
    req: HttpRequest,
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<AskRequest>,
) -> Result<HttpResponse, ApiError> {
    question_budget(&req, &caller).await?;
    let ctx = caller.context(&*body);
    if answer_stream::streams(&req, &bus, &ctx).await {
        return answer_stream::respond(&req, bus, ctx, *id, true, question(&body)).await;
    }
    let outcome = bus.ask(&ctx, *id, true, question(&body), None).await?;
    crate::metrics::count_answer(&req, &outcome);
    Ok(HttpResponse::Ok().json(outcome))
}

/// Give, or change, the caller's feedback on an answer (one reaction per user per answer).
#[utoipa::path(put, path = "/v1/conversations/{id}/answers/{answer_id}/feedback", tag = "conversations",
    request_body = FeedbackRequest,
    params(("id" = Uuid, Path), ("answer_id" = Uuid, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[put("/conversations/{id}/answers/{answer_id}/feedback")]
pub async fn feedback(
    bus: web::Data<CommandBus>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<FeedbackRequest>,
) -> Result<HttpResponse, ApiError> {
    let (id, answer_id) = path.into_inner();
    let ctx = caller.context(&*body);
    let command = ConversationCommand::GiveFeedback {
        answer_id,
        user_id: ctx.user_id.to_string(),
        feedback: body.into_inner().into(),
    };
    Ok(HttpResponse::Ok().json(bus.conversation(&ctx, id, command).await?))
}

/// Mark the conversation resolved: the asker's problem is solved.
#[utoipa::path(post, path = "/v1/conversations/{id}/resolve", tag = "conversations",
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/conversations/{id}/resolve")]
pub async fn resolve(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let ctx = caller.context(&());
    let command = ConversationCommand::Resolve {
        by: ctx.user_id.to_string(),
    };
    Ok(HttpResponse::Ok().json(bus.conversation(&ctx, *id, command).await?))
}

/// Escalate the conversation to human support (the opposite of a deflection).
#[utoipa::path(post, path = "/v1/conversations/{id}/escalate", tag = "conversations",
    request_body(content = EscalateRequest, description = "Optional reason"),
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/conversations/{id}/escalate")]
pub async fn escalate(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<EscalateRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = caller.context(&*body);
    let command = ConversationCommand::Escalate {
        by: ctx.user_id.to_string(),
        reason: body.into_inner().reason,
    };
    Ok(HttpResponse::Ok().json(bus.conversation(&ctx, *id, command).await?))
}

/// Returned with every read: compare a command's `version` with the conversation's `version`
/// to wait for your own write; `freshness` says how far behind the event store the model is.
/// (Projection positions are the platform's, not a tenant's: read on the owner's pool.)
async fn freshness(pool: &PgPool) -> Result<Freshness, ApiError> {
    Freshness::load(pool, &Folded(Conversations))
        .await
        .map_err(read_error)
}

/// A read-side failure as a problem: a database that cannot be queried is a 503 (retry), a
/// stored row that does not decode is a 500 (an operator must look), never an empty value.
pub fn read_error(e: impl Into<projections::ReadError>) -> ApiError {
    match e.into() {
        // A stored value the column's type cannot take (an unknown status word...): the row is
        // unreadable, retrying does not help.
        e @ projections::ReadError::Database(
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_),
        ) => ApiError::infrastructure(
            Code::StoredDataUnreadable,
            "a stored row holds a value of the wrong kind; an operator has to repair it",
            &e,
        ),
        e @ projections::ReadError::Database(_) => ApiError::infrastructure(
            Code::ServiceUnavailable,
            "the read model cannot be queried; retry shortly",
            &e,
        ),
        e @ projections::ReadError::Unreadable { .. } => ApiError::infrastructure(
            Code::StoredDataUnreadable,
            &format!("{e}; an operator has to repair it"),
            &e,
        ),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,17}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
    /// Started by this user.
    #[param(pattern = "^[^\\x00]*$")]
    pub user: Option<String>,
    /// Started at or after (RFC 3339).
    #[param(value_type = Option<Moment>, inline)]
    pub from: Option<Moment>,
    /// Started before (RFC 3339).
    #[param(value_type = Option<Moment>, inline)]
    pub to: Option<Moment>,
    #[param(value_type = Option<ConversationState>, inline)]
    pub status: Option<String>,
    /// Has an uncertain (true) or a certain (false) answer.
    pub uncertain: Option<bool>,
    /// Has an answer with an `upvote`, a `downvote`, or `none` without reactions.
    #[param(value_type = Option<ReactionFilter>, inline)]
    pub reaction: Option<String>,
    #[param(value_type = Option<Intent>, inline)]
    pub intent: Option<String>,
    #[param(pattern = "^[^\\x00]*$")]
    pub topic: Option<String>,
    /// Case-insensitive text search in questions and answers.
    #[param(max_length = 200, pattern = "^[^\\x00]*$")]
    pub q: Option<String>,
}

impl ListQuery {
    fn filter(&self) -> Result<conversations::ConversationFilter, ApiError> {
        if self.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
            return Err(ApiError::new(
                Code::InvalidSearch,
                "q is at most 200 characters",
            ));
        }
        Ok(conversations::ConversationFilter {
            user: self.user.clone(),
            from: self.from.map(|m| m.0),
            to: self.to.map(|m| m.0),
            status: parse_word(self.status.as_deref(), Code::InvalidStatus)?,
            uncertain: self.uncertain,
            reaction: parse_word(self.reaction.as_deref(), Code::InvalidReaction)?,
            intent: parse_word(self.intent.as_deref(), Code::InvalidIntent)?,
            topic: self.topic.clone(),
            search: self.q.clone().filter(|q| !q.trim().is_empty()),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    pub items: Vec<ConversationSummary>,
    pub next_cursor: Option<String>,
    pub freshness: Freshness,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationWithFreshness {
    #[serde(flatten)]
    pub conversation: ConversationDetail,
    pub freshness: Freshness,
}

/// `{updated_at in microseconds}_{id}`, as `next_cursor` writes it; at most 17 digits (up to
/// the year 5138), so the moment is one the database can compare.
fn parse_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = cursor.split_once('_')?;
    if micros.is_empty() || micros.len() > 17 || !micros.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// The tenant's conversations, most recently active first (any role). Eventually consistent:
/// `freshness` says how far behind the event store the read model is.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", params(ListQuery),
    responses((status = 200, body = ConversationPage), CommandProblems), security(("bearer" = [])))]
#[get("/conversations")]
pub async fn list(
    pool: web::Data<PgPool>,
    tenants: web::Data<crate::read_pool::ReadPool>,
    auth: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::new(
            Code::InvalidLimit,
            "limit must be between 1 and 100",
        ));
    }
    let before = match &query.cursor {
        None => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(|| {
            ApiError::new(
                Code::InvalidCursor,
                "the cursor is not one this API gave out",
            )
        })?),
    };
    let filter = query.filter()?;
    let mut tx = tenant_tx(&tenants, &auth.0.tenant_id).await?;
    let items = conversations::list(&mut tx, &auth.0.tenant_id, &filter, limit, before)
        .await
        .map_err(read_error)?;
    end_read(tx);
    let next_cursor = (items.len() as i64 == limit)
        .then(|| {
            items
                .last()
                .map(|c| format!("{}_{}", c.updated_at.timestamp_micros(), c.id))
        })
        .flatten();
    Ok(HttpResponse::Ok().json(ConversationPage {
        items,
        next_cursor,
        freshness: freshness(&pool).await?,
    }))
}

/// One conversation with its questions, answers and feedback (any role).
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", params(("id" = Uuid, Path)),
    responses((status = 200, body = ConversationWithFreshness), CommandProblems), security(("bearer" = [])))]
#[get("/conversations/{id}")]
pub async fn get_one(
    pool: web::Data<PgPool>,
    tenants: web::Data<crate::read_pool::ReadPool>,
    auth: Authenticated,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let mut tx = tenant_tx(&tenants, &auth.0.tenant_id).await?;
    let conversation = conversations::get(&mut tx, &auth.0.tenant_id, *id)
        .await
        .map_err(read_error)?;
    end_read(tx);
    let conversation = conversation.ok_or_else(|| {
        ApiError::new(
            Code::ConversationNotFound,
            "no such conversation in the read model (a new one may not have arrived yet)",
        )
    })?;
    Ok(HttpResponse::Ok().json(ConversationWithFreshness {
        conversation,
        freshness: freshness(&pool).await?,
    }))
}
