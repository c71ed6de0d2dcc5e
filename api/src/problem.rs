//! RFC 7807 problem details. Every error the API returns is one of these, with a stable `code`
//! (docs/errors.md lists them).
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use commands::CommandError;
use domain::Code;
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
#[error("{code}: {detail}")]
pub struct ApiError {
    /// Decides the status (`Code::status`): the one place a status is chosen.
    pub code: Code,
    pub detail: String,
    /// Extra headers the problem needs (`Allow` on a 405).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn problem(&self) -> Problem {
        let status = self.status();
        Problem {
            type_: format!("/problems/{}", self.code),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str().to_string(),
        }
    }

    /// An infrastructure failure: logged with its whole cause chain, shown without it.
    pub fn infrastructure(
        code: Code,
        shown: &str,
        cause: &(dyn std::error::Error + 'static),
    ) -> Self {
        tracing::error!(code = %code, error = %projections::error_chain(cause), "{shown}");
        Self::new(code, shown)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status();
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)));
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        for (name, value) in &self.headers {
            response.insert_header((name.clone(), value.clone()));
        }
        let mut response =
            response.body(serde_json::to_string(&self.problem()).unwrap_or_default());
        // For the metrics middleware: problems counted by their stable code.
        response
            .extensions_mut()
            .insert(crate::metrics::ProblemCode(self.code.as_str()));
        response
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Rejected(r) => Self::new(r.code, r.message),
            e @ CommandError::Forbidden { .. } => Self::new(Code::Forbidden, e.to_string()),
            e @ CommandError::Concurrency => Self::new(Code::ConcurrentModification, e.to_string()),
            e @ CommandError::IdempotencyKeyReused => {
                Self::new(Code::IdempotencyKeyReused, e.to_string())
            }
            e @ CommandError::IdempotencyKeyInProgress => {
                Self::new(Code::IdempotencyKeyInProgress, e.to_string())
            }
            e @ CommandError::Unavailable(_) => Self::infrastructure(
                Code::ServiceUnavailable,
                "the service cannot reach its database; retry shortly",
                &e,
            ),
            e @ CommandError::Internal { .. } => Self::infrastructure(
                Code::InternalError,
                "an internal error occurred; it has been logged",
                &e,
            ),
        }
    }
}

/// Turns the body extractor's failures into problems.
pub fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match &err {
        E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => ApiError::new(
            Code::PayloadTooLarge,
            format!("the request body exceeds {limit} bytes"),
        ),
        E::ContentType => ApiError::new(
            Code::UnsupportedMediaType,
            "send the body as application/json",
        ),
        E::Deserialize(e) if e.is_data() => ApiError::new(
            Code::InvalidBody,
            format!("the body does not match the expected shape: {e}"),
        ),
        E::Deserialize(e) => ApiError::new(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        ),
        _ => ApiError::new(Code::UnreadableBody, "the request body could not be read"),
    }
}

/// Turns the path extractor's failures into problems.
pub fn path_error(err: actix_web::error::PathError) -> ApiError {
    ApiError::new(
        Code::InvalidPath,
        format!("a path parameter is invalid: {err}"),
    )
}

/// Turns the query-string extractor's failures into problems.
pub fn query_error(err: actix_web::error::QueryPayloadError) -> ApiError {
    ApiError::new(
        Code::InvalidQuery,
        format!("the query string is invalid: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/errors.md has one row per code, with its anchor and the catalogue's status.
    #[test]
    fn error_catalogue_matches_the_docs() {
        let docs = include_str!("../../docs/errors.md");
        let documented: Vec<(String, u16)> = docs
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("| <a id=\"")?;
                let (anchor, rest) = rest.split_once("\"></a>`")?;
                let (name, rest) = rest.split_once("` | ")?;
                assert_eq!(anchor, name, "the anchor of `{name}`");
                let status = rest.split(" |").next()?.trim().parse().ok()?;
                Some((name.to_string(), status))
            })
            .collect();
        let catalogue: Vec<(String, u16)> = Code::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), c.status()))
            .collect();
        assert_eq!(documented, catalogue);
        for code in Code::ALL {
            assert!(docs.contains(&format!(
                "<a id=\"{}\"></a>",
                code.doc_anchor().rsplit('#').next().unwrap_or_default()
            )));
        }
    }

    #[test]
    fn the_status_comes_from_the_code_and_5xx_hide_their_cause() {
        let cause = std::io::Error::other("password=hunter2 at db:5432");
        let e = ApiError::infrastructure(Code::ServiceUnavailable, "retry shortly", &cause);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.problem().detail.contains("hunter2"));
        assert_eq!(
            ApiError::new(Code::MethodNotAllowed, "x").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
