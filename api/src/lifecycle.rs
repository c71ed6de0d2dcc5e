//! The instance's lifecycle as requests see it (docs/deployment.md, "Graceful shutdown").
//!
//! A stop goes through three states: serving; *draining* (readiness answers 503 so that load
//! balancers take the instance out, every request still served); *closing* (new requests are
//! refused with `shutting_down` and `Connection: close`, the ones already admitted finish).
//! The server's workers are stopped only once nothing is in flight: each actix worker runs its
//! own runtime, and a database connection opened on an idle worker's runtime dies with it, so
//! stopping workers under a request in flight could fail that request.
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use domain::Code;

use crate::problem::ApiError;

/// Shared by the server's workers and whoever stops it.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: shutdown::Shutdown,
    closing: AtomicBool,
    /// Requests admitted and not yet answered (their bodies included).
    in_flight: Arc<AtomicUsize>,
}

impl Lifecycle {
    /// Readiness fails from now on.
    pub fn drain(&self) {
        self.draining.stop();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_stopping()
    }

    /// Refuses new requests from now on, then waits (at most `within`) until the admitted ones
    /// are answered. Whether they all were.
    pub async fn close(&self, within: Duration) -> bool {
        self.closing.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + within;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a request in flight until its response body is sent (or dropped).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds its request's place among those in flight: a streamed answer
/// counts until its last chunk.
struct Tracked {
    body: BoxBody,
    _in_flight: InFlight,
}

impl MessageBody for Tracked {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// Admits a request unless the instance is closing; counts it while in flight.
pub async fn gate<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error> {
    let Some(lifecycle) = req.app_data::<web::Data<Lifecycle>>().cloned() else {
        return Ok(next
            .call(req)
            .await?
            .map_into_boxed_body()
            .map_into_left_body());
    };
    // Counted before the check, and `close` sets the flag before it reads the count: a request
    // either sees `closing` or is waited for.
    lifecycle.in_flight.fetch_add(1, Ordering::SeqCst);
    let in_flight = InFlight(lifecycle.in_flight.clone());
    if lifecycle.closing.load(Ordering::SeqCst) {
        drop(in_flight);
        let mut response = ApiError::new(
            Code::ShuttingDown,
            "this instance is shutting down; send the request again (another instance answers)",
        )
        .error_response();
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return Ok(req.into_response(response).map_into_right_body());
    }
    let response = next.call(req).await?;
    Ok(response
        .map_body(|_, body| {
            BoxBody::new(Tracked {
                body: body.boxed(),
                _in_flight: in_flight,
            })
        })
        .map_into_left_body())
}
