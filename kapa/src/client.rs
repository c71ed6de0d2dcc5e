//! Kapa's HTTP API (`../shared/reference/kapa-api.md`): one attempt per call. Retries, the
//! circuit breaker and the bulkhead are `crate::resilience`'s; this module only speaks the
//! protocol. The API key travels in `X-API-KEY` and nowhere else: not in URLs, not in errors.
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::stream::{Chunk, ChunkParser};

/// A source an answer cites, as Kapa sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
pub struct RelevantSource {
    /// Its title.
    #[serde(default)]
    pub title: Option<String>,
    /// Where it is.
    #[serde(default)]
    pub source_url: Option<String>,
}

/// Who asks, as Kapa may know them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KapaUser {
    /// A stable pseudonym.
    pub unique_client_id: String,
    /// Only when the tenant opted in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Role, channel and (by opt-in) company name.
    pub metadata: KapaUserMetadata,
}

/// Context about the asking user.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KapaUserMetadata {
    /// Only when the tenant opted in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    /// The user's role in the tenant.
    pub role: String,
    /// Where the question was asked.
    pub channel: String,
}

/// The body of a chat call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatBody {
    /// The question.
    pub query: String,
    /// The integration to attribute it to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<String>,
    /// The asking user.
    pub user: KapaUser,
}

/// Kapa's answer (the non-streamed response, or a stream put together).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct ChatAnswer {
    /// The answer text.
    pub answer: String,
    /// The thread, for follow-ups.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// The answer's id, for feedback.
    #[serde(default)]
    pub question_answer_id: Option<String>,
    /// The knowledge it cites.
    #[serde(default)]
    pub relevant_sources: Vec<RelevantSource>,
    /// Kapa was unsure (optional in the API).
    #[serde(default)]
    pub is_uncertain: Option<bool>,
}

/// Where a question goes: a new thread of a project, or an existing thread.
#[derive(Debug, Clone, Copy)]
pub enum Thread<'a> {
    /// Start a thread in this project.
    New { project_id: &'a str },
    /// Follow up in this thread.
    FollowUp { thread_id: &'a str },
}

/// A knowledge source as Kapa's ingestion API lists it. Flags and dates may come as strings;
/// they are read leniently.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KapaSource {
    /// Its id in Kapa.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its connector type (`web`, `github`...).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// When it was last ingested.
    #[serde(default)]
    pub ingested_at: Option<serde_json::Value>,
    /// The last ingestion task's status.
    #[serde(default)]
    pub last_task_status: Option<String>,
    /// The last ingestion task's error.
    #[serde(default)]
    pub last_task_error: Option<serde_json::Value>,
    /// How many documents it holds, when Kapa says.
    #[serde(default)]
    pub deployed_markdown_items: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default)]
    next: Option<String>,
    results: Vec<T>,
}

/// Feedback to forward.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeedbackBody {
    /// Kapa's answer id.
    pub question_answer: String,
    /// `upvote` or `downvote`.
    pub reaction: String,
    /// The pseudonymous user.
    pub user_identifier: String,
    /// For downvotes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<FeedbackComment>,
}

/// Why a downvote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeedbackComment {
    /// Free text.
    pub issue: String,
    /// The answer was wrong.
    pub incorrect: bool,
    /// The answer was beside the point.
    pub irrelevant: bool,
    /// The answer did not address the question.
    pub unaddressed: bool,
}

/// What one call can end in, besides success.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection, or it broke before a response.
    #[error("could not reach Kapa: {0}")]
    Connect(String),
    /// The call took longer than allowed.
    #[error("Kapa did not answer in time")]
    Timeout,
    /// Kapa answered with an error status.
    #[error("Kapa answered {status}: {detail}")]
    Status {
        /// The status.
        status: StatusCode,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
        /// Kapa's `detail`, or the start of the body.
        detail: String,
    },
    /// Kapa answered something unreadable.
    #[error("Kapa's answer is unreadable: {0}")]
    Malformed(String),
    /// A stream ended before its last chunk.
    #[error("Kapa's streamed answer ended before it was complete")]
    Truncated,
    /// Kapa reported an error in the stream.
    #[error("Kapa reported an error: {0}")]
    Engine(String),
}

impl CallError {
    /// Safe to try again: nothing of an answer was received and the failure is transient
    /// (connection, 429, 502/503/504). A timeout is not retried: it used the budget.
    pub fn retry_safe(&self) -> bool {
        match self {
            CallError::Connect(_) => true,
            CallError::Status { status, .. } => matches!(status.as_u16(), 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        // Never the URL in messages: tidy, and nothing of a request leaks into logs.
        let e = e.without_url();
        if e.is_timeout() {
            CallError::Timeout
        } else if e.is_decode() {
            CallError::Malformed(e.to_string())
        } else {
            CallError::Connect(e.to_string())
        }
    }
}

/// Kapa's API at one base URL.
#[derive(Clone)]
pub struct KapaClient {
    http: reqwest::Client,
    base: Url,
}

impl KapaClient {
    /// A client for `base_url` (`https://api.kapa.ai`), connecting within `connect_timeout`.
    pub fn new(base_url: &str, connect_timeout: Duration) -> Result<Self, String> {
        let base = Self::parse_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .user_agent(concat!("answers-platform/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the Kapa HTTP client: {e}"))?;
        Ok(Self { http, base })
    }

    /// Checks a base URL as `new` would, without building a client (configuration checks).
    pub fn parse_base_url(base_url: &str) -> Result<Url, String> {
        let base = Url::parse(base_url).map_err(|e| format!("kapa.base_url: {e}"))?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err("kapa.base_url must be http(s)".into());
        }
        Ok(base)
    }

    /// The base URL calls go to.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, path: &str) -> Result<Url, CallError> {
        self.base
            .join(path)
            .map_err(|e| CallError::Malformed(format!("building a URL: {e}")))
    }

    fn headers(key: &SecretString) -> Result<HeaderMap, CallError> {
        let mut headers = HeaderMap::new();
        let mut value = HeaderValue::from_str(key.expose_secret())
            .map_err(|_| CallError::Malformed("the API key is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert("X-API-KEY", value);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        Ok(headers)
    }

    fn chat_path(thread: Thread<'_>, stream: bool) -> String {
        let tail = if stream { "chat/stream/" } else { "chat/" };
        match thread {
            Thread::New { project_id } => {
                format!("/query/v1/projects/{}/{tail}", segment(project_id))
            }
            Thread::FollowUp { thread_id } => {
                format!("/query/v1/threads/{}/{tail}", segment(thread_id))
            }
        }
    }

    /// Asks and waits for the whole answer.
    pub async fn chat(
        &self,
        key: &SecretString,
        thread: Thread<'_>,
        body: &ChatBody,
    ) -> Result<ChatAnswer, CallError> {
        read_json(
            self.http
                .post(self.url(&Self::chat_path(thread, false))?)
                .headers(Self::headers(key)?)
                .json(body),
        )
        .await
    }

    /// Asks on the streaming endpoint, handing every piece of text to `on_text` as it comes.
    /// `on_start` is called once the response status is known to be good: from then on the
    /// call must not be retried.
    pub async fn chat_stream(
        &self,
        key: &SecretString,
        thread: Thread<'_>,
        body: &ChatBody,
        on_start: &mut (dyn FnMut() + Send),
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ChatAnswer, CallError> {
        use futures::StreamExt;
        let response = send(
            self.http
                .post(self.url(&Self::chat_path(thread, true))?)
                .headers(Self::headers(key)?)
                .json(body),
        )
        .await?;
        on_start();
        let mut answer = ChatAnswer::default();
        let mut parser = ChunkParser::default();
        let mut stream = response.bytes_stream();
        let mut ended = false;
        let mut handle = |chunk: Chunk, answer: &mut ChatAnswer| -> Result<bool, CallError> {
            match chunk {
                Chunk::StreamStart { thread_id } => {
                    answer.thread_id = thread_id.or(answer.thread_id.take())
                }
                Chunk::RelevantSources(sources) => answer.relevant_sources = sources,
                Chunk::PartialAnswer(text) => {
                    on_text(&text);
                    answer.answer.push_str(&text);
                }
                Chunk::Metadata { is_uncertain } => answer.is_uncertain = is_uncertain,
                Chunk::Identifiers {
                    thread_id,
                    question_answer_id,
                } => {
                    answer.thread_id = thread_id.or(answer.thread_id.take());
                    answer.question_answer_id = question_answer_id;
                    return Ok(true);
                }
                Chunk::Error(reason) => return Err(CallError::Engine(reason)),
                Chunk::Other => {}
            }
            Ok(false)
        };
        while let Some(bytes) = stream.next().await {
            // A connection cut mid-stream is a truncated answer, not a transient failure:
            // part of it was already shown.
            let bytes = bytes.map_err(|_| CallError::Truncated)?;
            for chunk in parser
                .push(&bytes)
                .map_err(|e| CallError::Malformed(e.to_string()))?
            {
                ended |= handle(chunk, &mut answer)?;
            }
        }
        if let Some(chunk) = parser
            .finish()
            .map_err(|e| CallError::Malformed(e.to_string()))?
        {
            ended |= handle(chunk, &mut answer)?;
        }
        if !ended {
            return Err(CallError::Truncated);
        }
        Ok(answer)
    }

    /// Creates or updates a user's feedback on an answer.
    pub async fn upsert_feedback(
        &self,
        key: &SecretString,
        body: &FeedbackBody,
        timeout: Duration,
    ) -> Result<(), CallError> {
        send(
            self.http
                .post(self.url("/query/v1/feedback/upsert/")?)
                .headers(Self::headers(key)?)
                .timeout(timeout)
                .json(body),
        )
        .await
        .map(|_| ())
    }

    /// Retrieval without generation: the best chunks of the project's knowledge.
    pub async fn retrieve(
        &self,
        key: &SecretString,
        project_id: &str,
        query: &str,
        top_k: u8,
        timeout: Duration,
    ) -> Result<Vec<serde_json::Value>, CallError> {
        read_json(
            self.http
                .post(self.url(&format!(
                    "/query/v1/projects/{}/retrieval/",
                    segment(project_id)
                ))?)
                .headers(Self::headers(key)?)
                .timeout(timeout)
                .json(&serde_json::json!({"query": query, "top_k": top_k.clamp(1, 15)})),
        )
        .await
    }

    /// Every knowledge source of the project, following `next` pages (only on Kapa's own
    /// host: a `next` elsewhere would carry the key to a stranger).
    pub async fn sources(
        &self,
        key: &SecretString,
        project_id: &str,
        timeout: Duration,
    ) -> Result<Vec<KapaSource>, CallError> {
        let mut url = self.url(&format!(
            "/ingestion/v1/projects/{}/sources/?page_size=100",
            segment(project_id)
        ))?;
        let mut all = Vec::new();
        for _ in 0..100 {
            let page: Page<KapaSource> = read_json(
                self.http
                    .get(url.clone())
                    .headers(Self::headers(key)?)
                    .timeout(timeout),
            )
            .await?;
            all.extend(page.results);
            match page.next {
                Some(next) => {
                    let next = Url::parse(&next)
                        .or_else(|_| self.base.join(&next))
                        .map_err(|e| CallError::Malformed(format!("next page: {e}")))?;
                    if next.origin() != self.base.origin() {
                        return Err(CallError::Malformed(
                            "a next page on another host was not followed".into(),
                        ));
                    }
                    url = next;
                }
                None => return Ok(all),
            }
        }
        Err(CallError::Malformed(
            "more than 100 pages of sources".into(),
        ))
    }

    /// One knowledge source.
    pub async fn source(
        &self,
        key: &SecretString,
        project_id: &str,
        source_id: &str,
        timeout: Duration,
    ) -> Result<KapaSource, CallError> {
        read_json(
            self.http
                .get(self.url(&format!(
                    "/ingestion/v1/projects/{}/sources/{}/",
                    segment(project_id),
                    segment(source_id)
                ))?)
                .headers(Self::headers(key)?)
                .timeout(timeout),
        )
        .await
    }
}

/// A path segment, percent-encoded: ids come from tenants' settings.
fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Sends, and turns an error status into a [`CallError`].
async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
    let response = request.send().await.map_err(CallError::from_reqwest)?;
    checked(response).await
}

/// Sends and reads a JSON body.
async fn read_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, CallError> {
    let bytes = send(request)
        .await?
        .bytes()
        .await
        .map_err(CallError::from_reqwest)?;
    serde_json::from_slice(&bytes).map_err(|e| CallError::Malformed(e.to_string()))
}

async fn checked(response: reqwest::Response) -> Result<reqwest::Response, CallError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    Err(CallError::Status {
        status,
        retry_after,
        detail,
    })
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn ids_cannot_change_the_path() {
        assert_eq!(
            KapaClient::chat_path(
                Thread::New {
                    project_id: "../admin"
                },
                false
            ),
            "/query/v1/projects/..%2Fadmin/chat/"
        );
    }
}
