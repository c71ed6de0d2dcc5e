//! Server-Sent Events for asking (`Accept: text/event-stream`): `chunk` events as the engine
//! streams, then one `answer` event with the recorded outcome (the same body as the JSON
//! response). The question is asked in a task of its own, so a client that disconnects
//! mid-stream does not cancel it: the answer is still recorded, once, complete.
//! A failure before the first chunk (authorisation, a pending question, a conflict) is an
//! ordinary problem+json response with its status; after it, an `error` event with the problem.
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use commands::{AskQuestion, CommandBus, CommandContext, CommandOutcome};
use domain::engine::ChunkSink;
use futures::stream::{self, StreamExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::problem::ApiError;

/// Whether the client asked for an event stream.
pub fn wants_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|part| part.trim().starts_with("text/event-stream"))
        })
}

/// Whether the caller asked for a stream and the `streaming-answers` flag lets them have one
/// (otherwise they get the JSON answer).
pub async fn streams(req: &HttpRequest, bus: &CommandBus, ctx: &CommandContext) -> bool {
    use commands::flags::{EvaluationContext, FlagProvider};
    if !wants_stream(req) {
        return false;
    }
    let context = EvaluationContext {
        tenant: ctx.tenant_id.clone(),
        user: ctx.user_id.to_string(),
    };
    bus.flags()
        .resolve_bool(domain::flags::STREAMING_ANSWERS, true, &context)
        .await
        .value
}

enum Message {
    Chunk(String),
    Done(Result<CommandOutcome, ApiError>),
}

struct ChannelSink(mpsc::UnboundedSender<Message>);

impl ChunkSink for ChannelSink {
    fn chunk(&self, text: &str) {
        // The client may be gone; the answer is recorded regardless.
        let _ = self.0.send(Message::Chunk(text.to_string()));
    }
}

fn event(name: &str, data: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Asks and answers as an event stream.
pub async fn respond(
    req: &actix_web::HttpRequest,
    bus: web::Data<CommandBus>,
    ctx: CommandContext,
    conversation_id: Uuid,
    follow_up: bool,
    question: AskQuestion,
) -> Result<HttpResponse, ApiError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink: Arc<dyn ChunkSink> = Arc::new(ChannelSink(tx.clone()));
    let bus = bus.into_inner();
    let metrics = req
        .app_data::<web::Data<crate::metrics::Metrics>>()
        .cloned();
    actix_web::rt::spawn(async move {
        let outcome = bus
            .ask(&ctx, conversation_id, follow_up, question, Some(sink))
            .await
            .map_err(ApiError::from);
        if let (Some(metrics), Ok(outcome)) = (&metrics, &outcome) {
            metrics.answer(outcome);
        }
        let _ = tx.send(Message::Done(outcome));
    });
    let first = match rx.recv().await {
        Some(Message::Done(Err(problem))) => return Err(problem),
        Some(first) => first,
        None => {
            return Err(ApiError::new(
                domain::Code::InternalError,
                "the answer task ended without a word; it has been logged",
            ))
        }
    };
    let rest = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    });
    let body = stream::iter([first]).chain(rest).map(|message| {
        Ok::<_, actix_web::Error>(match message {
            Message::Chunk(text) => event("chunk", &serde_json::json!({ "text": text })),
            Message::Done(Ok(outcome)) => event("answer", &outcome),
            Message::Done(Err(problem)) => event("error", &problem.problem()),
        })
    });
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .insert_header(("X-Accel-Buffering", HeaderValue::from_static("no")))
        .streaming(body))
}
