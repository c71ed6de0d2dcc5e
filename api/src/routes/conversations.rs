use actix_web::{post, put, web, HttpResponse};
use commands::{AskQuestion, CommandBus, CommandOutcome};
use domain::conversation::ConversationCommand;
use uuid::Uuid;

use crate::dto::*;
use crate::problem::ApiError;
use crate::routes::{Caller, CommandProblems};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(start)
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

/// Ask the first question of a new conversation. Answers with the recorded answer
/// (`answer.status` is `answered`, `failed` or `blocked`).
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", request_body = AskRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user")),
    responses((status = 201, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/conversations")]
pub async fn start(
    bus: web::Data<CommandBus>,
    caller: Caller,
    body: web::Json<AskRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = caller.context(&*body);
    let outcome = bus
        .ask(&ctx, Uuid::now_v7(), false, question(&body))
        .await?;
    Ok(HttpResponse::Created().json(outcome))
}

/// Ask a follow-up question in an open conversation.
#[utoipa::path(post, path = "/v1/conversations/{id}/questions", tag = "conversations", request_body = AskRequest,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/conversations/{id}/questions")]
pub async fn follow_up(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<AskRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = caller.context(&*body);
    let outcome = bus.ask(&ctx, *id, true, question(&body)).await?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// Give, or change, the caller's feedback on an answer (one reaction per user per answer).
#[utoipa::path(put, path = "/v1/conversations/{id}/answers/{answer_id}/feedback", tag = "conversations",
    request_body = FeedbackRequest,
    params(("id" = Uuid, Path), ("answer_id" = Uuid, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user")),
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
        user_id: ctx.user_id.clone(),
        feedback: body.into_inner().into(),
    };
    Ok(HttpResponse::Ok().json(bus.conversation(&ctx, id, command).await?))
}

/// Mark the conversation resolved: the asker's problem is solved.
#[utoipa::path(post, path = "/v1/conversations/{id}/resolve", tag = "conversations",
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user")),
    responses((status = 200, body = CommandOutcome), CommandProblems), security(("bearer" = [])))]
#[post("/conversations/{id}/resolve")]
pub async fn resolve(
    bus: web::Data<CommandBus>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let ctx = caller.context(&());
    let command = ConversationCommand::Resolve {
        by: ctx.user_id.clone(),
    };
    Ok(HttpResponse::Ok().json(bus.conversation(&ctx, *id, command).await?))
}

/// Escalate the conversation to human support (the opposite of a deflection).
#[utoipa::path(post, path = "/v1/conversations/{id}/escalate", tag = "conversations",
    request_body(content = EscalateRequest, description = "Optional reason"),
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key, unique per user")),
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
        by: ctx.user_id.clone(),
        reason: body.into_inner().reason,
    };
    Ok(HttpResponse::Ok().json(bus.conversation(&ctx, *id, command).await?))
}
