//! RFC 7807 problem details. Every error the API returns is one of these, with a stable `code`
//! (docs/errors.md lists them).
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use commands::CommandError;
use commands::RejectionKindDto;
use serde::Serialize;
use utoipa::ToSchema;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 7807 problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/{code}`
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable error code.
    pub code: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {detail}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    /// Sent as `WWW-Authenticate` on 401s.
    pub challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            challenge: None,
        }
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(code: &str, detail: impl Into<String>) -> Self {
        Self {
            challenge: Some("Bearer"),
            ..Self::new(StatusCode::UNAUTHORIZED, code, detail)
        }
    }

    pub fn not_found(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("/problems/{}", self.code),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.clone(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)));
        if let Some(challenge) = self.challenge {
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Rejected(r) => {
                let status = match r.kind {
                    RejectionKindDto::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    RejectionKindDto::Conflict => StatusCode::CONFLICT,
                    RejectionKindDto::NotFound => StatusCode::NOT_FOUND,
                };
                Self::new(status, r.code, r.message)
            }
            e @ CommandError::Forbidden { .. } => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            e @ CommandError::Concurrency => Self::new(
                StatusCode::CONFLICT,
                "concurrent_modification",
                e.to_string(),
            ),
            e @ CommandError::IdempotencyKeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                e.to_string(),
            ),
            e @ CommandError::IdempotencyKeyInProgress => Self::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_progress",
                e.to_string(),
            ),
            CommandError::Unavailable(detail) => {
                tracing::error!(%detail, "event store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "the service cannot reach its database; retry shortly",
                )
            }
            CommandError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "an internal error occurred; it has been logged",
                )
            }
        }
    }
}

/// Turns the body extractor's failures into problems.
pub fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match &err {
        E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        E::Deserialize(e) if e.is_data() => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the body does not match the expected shape: {e}"),
        ),
        E::Deserialize(e) => {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        }
        _ => ApiError::bad_request("unreadable_body", "the request body could not be read"),
    }
}

pub fn path_error(err: actix_web::error::PathError) -> ApiError {
    ApiError::bad_request(
        "invalid_path",
        format!("a path parameter is invalid: {err}"),
    )
}
