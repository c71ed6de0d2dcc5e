//! Rate limits and quotas (docs/security.md): per client IP on every request (tighter on the
//! sign-in routes), per user and per tenant on every authenticated request, and the question
//! budgets that protect the paid engine (per user per minute; per tenant per minute and per
//! month, from the tenant's plan or the defaults). Budgets live in Redis, shared by every
//! replica; when Redis cannot answer, the configured choice applies: `open` (this process's
//! own budgets) or `closed` (503).
//!
//! Every limited response carries `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers) for its most constrained budget; a refusal is a 429
//! problem with `Retry-After`.
pub mod store;

use std::net::IpAddr;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::ResponseError;
use actix_web::{web, HttpMessage, HttpRequest};
use chrono::{Datelike, TimeZone, Utc};
use domain::tenant::PlanQuota;
use domain::Code;
use serde::Deserialize;

use crate::auth::Claims;
use crate::problem::ApiError;
use store::{Kind, Limit, LocalBudgets, Outcome, RedisBudgets};

/// Rate limits (README "Configuration").
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub redis_url: String,
    /// Prefix of every key (several deployments may share a Redis).
    pub key_prefix: String,
    /// How long a Redis round trip may take before it counts as unreachable.
    pub redis_timeout_ms: u64,
    /// `open` (this process's own budgets) or `closed` (503) while Redis is unreachable.
    pub on_redis_down: String,
    /// Proxies whose `client_ip_header` is believed (comma-separated IPs or CIDRs).
    pub trusted_proxies: String,
    /// The header trusted proxies put the client's address in.
    pub client_ip_header: String,
    pub per_ip_per_minute: u32,
    pub sign_in_per_ip_per_minute: u32,
    pub per_user_per_minute: u32,
    pub per_tenant_per_minute: u32,
    pub questions_per_user_per_minute: u32,
    /// The default plan: questions per tenant per minute and per calendar month (UTC).
    pub questions_per_tenant_per_minute: u32,
    pub questions_per_tenant_per_month: u64,
}

/// An address or a network, for the trusted proxies.
#[derive(Debug, Clone, Copy)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse().ok()?, p.parse().ok()?),
            None => {
                let addr: IpAddr = s.parse().ok()?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if matches!(addr, IpAddr::V4(_)) {
            32
        } else {
            128
        };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u8) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, net_len), (ip, ip_len)) = (bits(self.addr), bits(ip.to_canonical()));
        if net_len != ip_len {
            return false;
        }
        // Both kinds sit in the top bits (IPv4 shifted up by 96): the prefix counts from the top.
        let prefix = u32::from(self.prefix);
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        net & mask == ip & mask
    }
}

/// The limiter the application holds.
pub struct RateLimiter {
    settings: RateLimitSettings,
    redis: RedisBudgets,
    local: LocalBudgets,
    trusted: Vec<Net>,
    header: HeaderName,
}

/// The most constrained budget a request drew on, for the response headers.
#[derive(Debug, Clone)]
struct Applied {
    policy: &'static str,
    kind: Kind,
    outcome: Outcome,
}

const MINUTE: Duration = Duration::from_secs(60);

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> anyhow::Result<Self> {
        let mut trusted = Vec::new();
        for entry in settings
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            trusted.push(Net::parse(entry).ok_or_else(|| {
                anyhow::anyhow!(
                    "rate_limits.trusted_proxies: `{entry}` is not an IP address or CIDR"
                )
            })?);
        }
        let header =
            HeaderName::from_bytes(settings.client_ip_header.to_ascii_lowercase().as_bytes())
                .map_err(|_| {
                    anyhow::anyhow!("rate_limits.client_ip_header is not a header name")
                })?;
        Ok(Self {
            redis: RedisBudgets::new(
                &settings.redis_url,
                &settings.key_prefix,
                Duration::from_millis(settings.redis_timeout_ms),
            )?,
            local: LocalBudgets::default(),
            trusted,
            header,
            settings,
        })
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
    /// address in the proxy header that is not itself a trusted proxy. A header sent by anyone
    /// else is ignored (it could say anything).
    pub fn client_ip(&self, peer: Option<IpAddr>, header: Option<&str>) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        let trusted = |ip: IpAddr| self.trusted.iter().any(|n| n.contains(ip));
        if !trusted(peer) {
            return Some(peer);
        }
        let Some(header) = header else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in header.rsplit(',').map(str::trim) {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !trusted(client) {
                break;
            }
        }
        Some(client)
    }

    fn request_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let header = req
            .headers()
            .get(&self.header)
            .and_then(|v| v.to_str().ok());
        self.client_ip(req.peer_addr().map(|a| a.ip()), header)
    }

    /// Draws on `limits`; a refusal is a 429 problem. The most constrained budget is kept for
    /// the response headers.
    async fn draw(&self, req: &HttpRequest, limits: Vec<Limit>) -> Result<(), ApiError> {
        if !self.settings.enabled || limits.is_empty() {
            return Ok(());
        }
        let outcomes = match self.redis.check(&limits).await {
            Some(o) => o,
            None if self.settings.on_redis_down == "closed" => {
                return Err(ApiError::new(
                    Code::ServiceUnavailable,
                    "rate limiting is unavailable and this deployment refuses requests meanwhile; try again",
                ))
            }
            None => self.local.check(&limits),
        };
        let mut applied: Vec<Applied> = limits
            .iter()
            .zip(outcomes)
            .map(|(l, o)| Applied {
                policy: l.policy,
                kind: l.kind,
                outcome: o,
            })
            .collect();
        // The most constrained first: refused before allowed, then the fewest remaining, then
        // the longest wait (a retry before every refusing budget has room would fail again).
        applied.sort_by_key(|a| {
            (
                a.outcome.allowed,
                a.outcome.remaining,
                std::cmp::Reverse(a.outcome.retry_after),
            )
        });
        let Some(worst) = applied.first().cloned() else {
            return Ok(());
        };
        let mut extensions = req.extensions_mut();
        let keep = match extensions.get::<Applied>() {
            Some(previous) => {
                (worst.outcome.allowed, worst.outcome.remaining)
                    < (previous.outcome.allowed, previous.outcome.remaining)
            }
            None => true,
        };
        if keep {
            extensions.insert(worst.clone());
        }
        drop(extensions);
        if worst.outcome.allowed {
            return Ok(());
        }
        let retry = worst.outcome.retry_after.as_secs()
            + u64::from(worst.outcome.retry_after.subsec_nanos() > 0);
        let mut error = ApiError::new(
            Code::RateLimited,
            format!(
                "over the `{}` limit; retry in {} s",
                worst.policy,
                retry.max(1)
            ),
        )
        .with_header(
            actix_web::http::header::RETRY_AFTER,
            HeaderValue::from(retry.max(1)),
        );
        for (name, value) in headers(&worst) {
            error = error.with_header(name, value);
        }
        Err(error)
    }

    /// Whether `key` is seen for the first time within `ttl` (replay protection of inbound
    /// webhooks), kept in the same Redis; `None` when Redis cannot say.
    /// Whether the shared budgets' Redis answers now.
    pub async fn redis_answers(&self) -> bool {
        self.redis.ping().await
    }

    pub async fn first_time(&self, key: &str, ttl: Duration) -> Option<bool> {
        self.redis.first_time(key, ttl).await
    }

    /// Every request: per client IP; the sign-in routes have their own, tighter budget.
    fn ip_limits(&self, req: &HttpRequest) -> Vec<Limit> {
        let Some(ip) = self.request_ip(req) else {
            return Vec::new();
        };
        let mut limits = vec![rate(
            "ip",
            format!("ip:{ip}"),
            self.settings.per_ip_per_minute,
        )];
        if req.path().starts_with("/v1/auth/") {
            limits.push(rate(
                "sign_in",
                format!("sign-in:{ip}"),
                self.settings.sign_in_per_ip_per_minute,
            ));
        }
        limits
    }

    /// Every authenticated request: per user and per tenant.
    pub async fn caller(&self, req: &HttpRequest, claims: &Claims) -> Result<(), ApiError> {
        let tenant = claims.tenant_id.as_str();
        crate::metrics::count_tenant(req, tenant, claims.sub.as_str());
        let drawn = self
            .draw(
                req,
                vec![
                    rate(
                        "user",
                        format!("user:{tenant}:{}", claims.sub),
                        self.settings.per_user_per_minute,
                    ),
                    rate(
                        "tenant",
                        format!("tenant:{tenant}"),
                        self.settings.per_tenant_per_minute,
                    ),
                ],
            )
            .await;
        if drawn.is_err() {
            crate::metrics::count_rate_limited(req, tenant);
        }
        drawn
    }

    /// Usage reports of a feature flag: per user and flag (`flags.usage_per_minute`), shared
    /// by every replica like the other budgets.
    pub async fn flag_usage(
        &self,
        req: &HttpRequest,
        claims: &Claims,
        flag: &str,
        per_minute: u32,
    ) -> Result<(), ApiError> {
        let key = format!("flag-usage:{}:{}:{flag}", claims.tenant_id, claims.sub);
        self.draw(req, vec![rate("flag_usage", key, per_minute)])
            .await
    }

    /// Asking a question: the engine-cost budgets (the tenant's plan, or the defaults).
    pub async fn question(
        &self,
        req: &HttpRequest,
        claims: &Claims,
        plan: Option<PlanQuota>,
    ) -> Result<(), ApiError> {
        let tenant = claims.tenant_id.as_str();
        let per_minute = plan
            .map(|p| p.questions_per_minute)
            .unwrap_or(self.settings.questions_per_tenant_per_minute);
        let per_month = plan
            .map(|p| p.questions_per_month)
            .unwrap_or(self.settings.questions_per_tenant_per_month);
        let now = Utc::now();
        let next_month = if now.month() == 12 {
            Utc.with_ymd_and_hms(now.year() + 1, 1, 1, 0, 0, 0)
        } else {
            Utc.with_ymd_and_hms(now.year(), now.month() + 1, 1, 0, 0, 0)
        }
        .single()
        .unwrap_or(now);
        let ends_in = (next_month - now).to_std().unwrap_or(MINUTE);
        let drawn = self
            .draw(
                req,
                vec![
                    rate(
                        "questions_user",
                        format!("questions:{tenant}:{}", claims.sub),
                        self.settings.questions_per_user_per_minute,
                    ),
                    rate(
                        "questions_tenant",
                        format!("questions:{tenant}"),
                        per_minute,
                    ),
                    Limit {
                        policy: "questions_month",
                        key: format!("questions:{tenant}:{}-{:02}", now.year(), now.month()),
                        kind: Kind::Quota {
                            limit: per_month,
                            ends_in,
                        },
                    },
                ],
            )
            .await;
        if drawn.is_err() {
            crate::metrics::count_rate_limited(req, tenant);
        }
        drawn
    }
}

fn rate(policy: &'static str, key: String, per_minute: u32) -> Limit {
    Limit {
        policy,
        key,
        kind: Kind::Rate {
            limit: per_minute.max(1),
            period: MINUTE,
        },
    }
}

fn headers(applied: &Applied) -> [(HeaderName, HeaderValue); 2] {
    let (quota, window) = applied.kind.quota_and_window();
    let reset =
        applied.outcome.reset.as_secs() + u64::from(applied.outcome.reset.subsec_nanos() > 0);
    let value = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
    [
        (
            HeaderName::from_static("ratelimit-policy"),
            value(format!("\"{}\";q={quota};w={window}", applied.policy)),
        ),
        (
            HeaderName::from_static("ratelimit"),
            value(format!(
                "\"{}\";r={};t={reset}",
                applied.policy, applied.outcome.remaining
            )),
        ),
    ]
}

/// The middleware: per-IP budgets before the route, and the headers of the most constrained
/// budget the request drew on (here or in the route) after it.
pub async fn guard<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let limiter = req.app_data::<web::Data<RateLimiter>>().cloned();
    if let Some(limiter) = &limiter {
        let http = req.request().clone();
        if let Err(e) = limiter.draw(&http, limiter.ip_limits(&http)).await {
            return Ok(req.into_response(e.error_response()).map_into_right_body());
        }
    }
    let mut response = next.call(req).await?.map_into_left_body();
    let applied = response.request().extensions().get::<Applied>().cloned();
    if let Some(applied) = applied {
        for (name, value) in headers(&applied) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(trusted: &str) -> RateLimiter {
        RateLimiter::new(RateLimitSettings {
            enabled: true,
            redis_url: "redis://127.0.0.1:1".into(),
            key_prefix: "t:".into(),
            redis_timeout_ms: 50,
            on_redis_down: "open".into(),
            trusted_proxies: trusted.into(),
            client_ip_header: "X-Forwarded-For".into(),
            per_ip_per_minute: 1,
            sign_in_per_ip_per_minute: 1,
            per_user_per_minute: 1,
            per_tenant_per_minute: 1,
            questions_per_user_per_minute: 1,
            questions_per_tenant_per_minute: 1,
            questions_per_tenant_per_month: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_refusal_waits_for_the_longest_refusing_budget() {
        let l = limiter("");
        let req = actix_web::test::TestRequest::default().to_http_request();
        let limits = || {
            vec![
                rate("minute", "m".into(), 1),
                Limit {
                    policy: "month",
                    key: "q".into(),
                    kind: Kind::Quota {
                        limit: 1,
                        ends_in: Duration::from_secs(3600),
                    },
                },
            ]
        };
        l.draw(&req, limits()).await.unwrap();
        let refused = l.draw(&req, limits()).await.unwrap_err();
        assert!(refused.detail.contains("`month`"), "{}", refused.detail);
        let retry = refused
            .headers
            .iter()
            .find(|(n, _)| n == actix_web::http::header::RETRY_AFTER)
            .map(|(_, v)| v.to_str().unwrap().to_string());
        assert_eq!(retry.as_deref(), Some("3600"));
    }

    #[test]
    fn the_proxy_header_is_believed_only_from_trusted_proxies() {
        let l = limiter("10.0.0.0/8, 192.168.1.1");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // From a stranger: the header is ignored.
        assert_eq!(
            l.client_ip(Some(ip("203.0.113.9")), Some("1.2.3.4")),
            Some(ip("203.0.113.9"))
        );
        // From a trusted proxy: the right-most address that is not a proxy.
        assert_eq!(
            l.client_ip(
                Some(ip("10.1.2.3")),
                Some("6.6.6.6, 198.51.100.7, 192.168.1.1")
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            l.client_ip(Some(ip("10.1.2.3")), None),
            Some(ip("10.1.2.3"))
        );
        assert_eq!(
            l.client_ip(Some(ip("10.1.2.3")), Some("garbage")),
            Some(ip("10.1.2.3"))
        );
        assert!(RateLimiter::new(RateLimitSettings {
            trusted_proxies: "not-an-ip".into(),
            ..l.settings.clone()
        })
        .is_err());
    }
}
