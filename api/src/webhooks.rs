//! Webhooks (docs/webhooks.md): a tenant's endpoints receive the events of the topics they
//! subscribed to, signed the Standard Webhooks way, at least once.
//!
//! - **Dispatch**: every round, events of subscribed topics recorded since an endpoint was
//!   created (within a horizon) that have no delivery for it yet get one — an anti-join over
//!   `events`, so an event whose transaction commits late is still found.
//! - **Send**: due deliveries are leased (`next_attempt_at` pushed ahead, `SKIP LOCKED`), sent
//!   with `webhook-id` (the same on every retry), `webhook-timestamp` and `webhook-signature`
//!   (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, one per valid secret during a rotation).
//!   A failure is retried on a schedule over hours; after the last attempt the delivery is
//!   `failed`. An endpoint failing `disable_after_failures` times in a row is disabled, with a
//!   `WebhookDisabled` event.
//! - **Outbound safety**: no redirects, a timeout, and no private, loopback or link-local
//!   address (checked on the URL and on every DNS answer, so a name that resolves inward is
//!   refused too) unless the deployment allows them.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use commands::{CommandBus, CommandContext};
use domain::tenant::TenantCommand;
use domain::{Role, TenantId, UserId};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

/// Webhook delivery (README "Configuration").
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    /// Run the dispatcher and sender in this process.
    pub in_process: bool,
    /// How often they look for work.
    pub interval_ms: u64,
    /// Delays before each retry, comma-separated milliseconds (the default spans ~27 hours).
    pub retry_schedule_ms: String,
    /// Consecutive failed attempts after which an endpoint is disabled.
    pub disable_after_failures: u32,
    /// Timeout of one delivery.
    pub timeout_ms: u64,
    /// Allow endpoints on private, loopback and link-local addresses (tests, on-premise).
    pub allow_private: bool,
    /// Allow `http://` endpoints (otherwise https only).
    pub allow_http: bool,
    /// How far back events are considered for delivery.
    pub horizon_hours: u64,
    /// How long the previous secret still signs after a rotation.
    pub rotation_overlap_secs: u64,
}

impl WebhookSettings {
    /// The retry delays.
    pub fn schedule(&self) -> Vec<Duration> {
        self.retry_schedule_ms
            .split(',')
            .filter_map(|d| d.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .collect()
    }
}

/// A new signing secret: `whsec_` and 32 random bytes, base64 (the Standard Webhooks form).
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

/// The `v1,<signature>` of one message with one secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Why an inbound webhook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header is missing or malformed.
    #[error("the webhook-id, webhook-timestamp and webhook-signature headers are required")]
    Missing,
    /// The timestamp is more than the tolerance away from now.
    #[error("webhook-timestamp is more than 5 minutes from now")]
    Timestamp,
    /// No signature matches any valid secret.
    #[error("no signature in webhook-signature matches")]
    Signature,
}

/// How far an inbound webhook's timestamp may be from now.
pub const TOLERANCE_SECS: i64 = 300;

/// Verifies an inbound webhook (Standard Webhooks): the timestamp within ±5 minutes, and one
/// of the space-separated `v1,` signatures valid for one of `secrets`. Compared in constant
/// time.
pub fn verify(
    secrets: &[&str],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &str,
    now: i64,
) -> Result<(), VerifyError> {
    let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
        return Err(VerifyError::Missing);
    };
    let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Missing)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Timestamp);
    }
    let valid = secrets
        .iter()
        .filter_map(|s| sign(s, id, ts, body))
        .any(|expected| {
            signatures
                .split(' ')
                .any(|given| identity::secret::same(given.trim().as_bytes(), expected.as_bytes()))
        });
    if valid {
        Ok(())
    } else {
        Err(VerifyError::Signature)
    }
}

/// Why a URL may not receive webhooks.
pub fn refuse_url(url: &str, settings: &WebhookSettings) -> Option<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Some("not a URL".into());
    };
    match parsed.scheme() {
        "https" => {}
        "http" if settings.allow_http => {}
        _ => return Some("webhook endpoints must be https".into()),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("credentials do not belong in a webhook URL".into());
    }
    let host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
            Some(IpAddr::from([127, 0, 0, 1]))
        }
        Some(url::Host::Domain(_)) => None,
        None => return Some("the URL has no host".into()),
    };
    match host {
        Some(ip) if !settings.allow_private && !is_public(ip) => {
            Some(format!("{ip} is a private, loopback or link-local address"))
        }
        _ => None,
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// A resolver that drops inward addresses from every DNS answer (no DNS rebinding to the
/// metadata service or the cluster).
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let addrs: Vec<SocketAddr> = found.filter(|a| allow || is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err("the name resolves to no public address".into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The dispatcher and sender.
pub struct Webhooks {
    pool: PgPool,
    bus: Arc<CommandBus>,
    http: reqwest::Client,
    settings: WebhookSettings,
}

#[derive(Debug)]
struct Due {
    tenant_id: String,
    delivery_id: Uuid,
    endpoint_id: String,
    body: String,
    attempts: i32,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    previous_valid: bool,
}

impl Webhooks {
    pub fn new(
        pool: PgPool,
        bus: Arc<CommandBus>,
        settings: WebhookSettings,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms.min(5_000)))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PublicOnly {
                allow_private: settings.allow_private,
            }))
            .user_agent("answers-webhooks/1")
            .build()?;
        Ok(Self {
            pool,
            bus,
            http,
            settings,
        })
    }

    /// Creates the deliveries of new events.
    #[tracing::instrument(skip_all, err)]
    pub async fn dispatch(&self) -> anyhow::Result<u64> {
        let created = sqlx::query!(
            r#"
            WITH candidates AS (
                SELECT e.event_id, e.tenant_id, e.recorded_at, e.event_type, e.aggregate_id,
                       e.payload,
                       CASE
                         WHEN e.event_type IN ('FeedbackGiven', 'FeedbackChanged')
                              AND e.payload #>> ARRAY[e.event_type, 'feedback', 'reaction'] = 'downvote'
                           THEN 'answer.downvoted'
                         WHEN e.event_type = 'QuestionBlocked' THEN 'question.blocked'
                         WHEN e.event_type = 'SyncFailed' THEN 'source.sync_failed'
                         WHEN e.event_type = 'ConversationEscalated' THEN 'conversation.escalated'
                         WHEN e.event_type IN ('MemberInvited', 'MemberRoleChanged', 'MemberRemoved',
                                               'InvitationAccepted', 'MemberJoined')
                           THEN 'member.changed'
                         WHEN e.event_type IN ('QualityObjectiveBreached', 'QualityObjectiveRecovered')
                           THEN 'quality.changed'
                       END AS topic
                FROM events e
                WHERE e.recorded_at > now() - make_interval(hours => $1)
                  AND e.event_type IN ('FeedbackGiven', 'FeedbackChanged', 'QuestionBlocked',
                        'SyncFailed', 'ConversationEscalated', 'MemberInvited',
                        'MemberRoleChanged', 'MemberRemoved', 'InvitationAccepted', 'MemberJoined',
                        'QualityObjectiveBreached', 'QualityObjectiveRecovered')
                  AND e.tenant_id IN (SELECT tenant_id FROM webhook_endpoints WHERE enabled)
            )
            INSERT INTO webhook_deliveries (tenant_id, delivery_id, endpoint_id, event_id, topic, body)
            SELECT c.tenant_id, gen_random_uuid(), w.endpoint_id, c.event_id, c.topic,
                   json_build_object(
                     'type', c.topic,
                     'timestamp', c.recorded_at,
                     'data', json_build_object(
                       'tenant_id', c.tenant_id,
                       'event_id', c.event_id,
                       'event_type', c.event_type,
                       'object_id', COALESCE(NULLIF(split_part(c.aggregate_id, '/', 2), ''), c.aggregate_id),
                       'event', c.payload -> c.event_type))::text
            FROM candidates c
            JOIN webhook_endpoints w
              ON w.tenant_id = c.tenant_id AND w.enabled AND c.topic = ANY (w.topics)
             AND c.recorded_at >= w.created_at
            WHERE c.topic IS NOT NULL
            ON CONFLICT (tenant_id, endpoint_id, event_id) DO NOTHING
            "#,
            i32::try_from(self.settings.horizon_hours).unwrap_or(i32::MAX),
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(created)
    }

    /// Sends what is due.
    #[tracing::instrument(skip_all, err)]
    pub async fn send_due(&self) -> anyhow::Result<usize> {
        let lease = (self.settings.timeout_ms / 1000 + 30) as f64;
        let due = sqlx::query_as!(
            Due,
            r#"
            UPDATE webhook_deliveries d
            SET next_attempt_at = now() + make_interval(secs => $1)
            FROM webhook_endpoints w
            WHERE (d.tenant_id, d.delivery_id) IN (
                    SELECT d2.tenant_id, d2.delivery_id
                    FROM webhook_deliveries d2
                    JOIN webhook_endpoints w2
                      ON w2.tenant_id = d2.tenant_id AND w2.endpoint_id = d2.endpoint_id
                    WHERE d2.status = 'pending' AND d2.next_attempt_at <= now() AND w2.enabled
                    ORDER BY d2.next_attempt_at
                    LIMIT 50
                    FOR UPDATE OF d2 SKIP LOCKED)
              AND w.tenant_id = d.tenant_id AND w.endpoint_id = d.endpoint_id
            RETURNING d.tenant_id, d.delivery_id, d.endpoint_id, d.body, d.attempts, w.url,
                      w.secret, w.previous_secret,
                      COALESCE(w.previous_until > now(), false) AS "previous_valid!"
            "#,
            lease,
        )
        .fetch_all(&self.pool)
        .await?;
        let count = due.len();
        for delivery in due {
            self.send(delivery).await?;
        }
        Ok(count)
    }

    async fn send(&self, d: Due) -> anyhow::Result<()> {
        let id = format!("msg_{}", d.delivery_id.simple());
        let timestamp = chrono::Utc::now().timestamp();
        let mut signatures = vec![sign(&d.secret, &id, timestamp, &d.body)];
        if let (Some(previous), true) = (&d.previous_secret, d.previous_valid) {
            signatures.push(sign(previous, &id, timestamp, &d.body));
        }
        let signature = signatures
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let result = match refuse_url(&d.url, &self.settings) {
            Some(why) => Err(why),
            None => self
                .http
                .post(&d.url)
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(d.body.clone())
                .send()
                .await
                .map_err(|e| {
                    let mut text = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        text.push_str(": ");
                        text.push_str(&s.to_string());
                        source = s.source();
                    }
                    text
                }),
        };
        let (status, error) = match &result {
            Ok(r) if r.status().is_success() => (Some(i32::from(r.status().as_u16())), None),
            Ok(r) => (
                Some(i32::from(r.status().as_u16())),
                Some(format!("the endpoint answered {}", r.status())),
            ),
            Err(e) => (None, Some(e.chars().take(500).collect::<String>())),
        };
        match error {
            None => {
                sqlx::query!(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
                       last_status = $3, last_error = NULL, delivered_at = now()
                     WHERE tenant_id = $1 AND delivery_id = $2",
                    d.tenant_id,
                    d.delivery_id,
                    status,
                )
                .execute(&self.pool)
                .await?;
                sqlx::query!(
                    "UPDATE webhook_endpoints SET failure_streak = 0
                     WHERE tenant_id = $1 AND endpoint_id = $2",
                    d.tenant_id,
                    d.endpoint_id,
                )
                .execute(&self.pool)
                .await?;
            }
            Some(error) => self.failed(&d, status, &error).await?,
        }
        Ok(())
    }

    async fn failed(&self, d: &Due, status: Option<i32>, error: &str) -> anyhow::Result<()> {
        tracing::info!(endpoint = %d.endpoint_id, attempts = d.attempts + 1, %error, "webhook delivery failed");
        let schedule = self.settings.schedule();
        let attempt = usize::try_from(d.attempts).unwrap_or(0);
        let (final_status, delay) = match schedule.get(attempt) {
            Some(delay) => ("pending", *delay),
            None => ("failed", Duration::ZERO),
        };
        sqlx::query!(
            "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1, last_status = $4,
               last_error = $5, next_attempt_at = now() + make_interval(secs => $6)
             WHERE tenant_id = $1 AND delivery_id = $2",
            d.tenant_id,
            d.delivery_id,
            final_status,
            status,
            error,
            delay.as_secs_f64(),
        )
        .execute(&self.pool)
        .await?;
        let streak = sqlx::query_scalar!(
            "UPDATE webhook_endpoints SET failure_streak = failure_streak + 1
             WHERE tenant_id = $1 AND endpoint_id = $2 RETURNING failure_streak",
            d.tenant_id,
            d.endpoint_id,
        )
        .fetch_one(&self.pool)
        .await?;
        if u32::try_from(streak).unwrap_or(0) >= self.settings.disable_after_failures {
            self.disable(&d.tenant_id, &d.endpoint_id, streak).await?;
        }
        Ok(())
    }

    async fn disable(&self, tenant: &str, endpoint_id: &str, streak: i32) -> anyhow::Result<()> {
        let disabled = sqlx::query!(
            "UPDATE webhook_endpoints SET enabled = false
             WHERE tenant_id = $1 AND endpoint_id = $2 AND enabled",
            tenant,
            endpoint_id,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        if disabled == 0 {
            return Ok(());
        }
        tracing::warn!(
            tenant,
            endpoint_id,
            streak,
            "webhook endpoint disabled after failing"
        );
        let ctx = CommandContext::acting(
            TenantId::parse(tenant)?,
            UserId::parse("webhook-delivery")?,
            Role::Admin,
        );
        self.bus
            .tenant(
                &ctx,
                TenantCommand::DisableWebhook {
                    endpoint_id: endpoint_id.to_string(),
                    reason: format!("{streak} delivery attempts failed in a row"),
                },
            )
            .await?;
        Ok(())
    }

    /// Dispatches and sends every `interval`, for ever.
    pub fn spawn(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        crate::workers::every(interval, "webhook delivery", move || {
            let webhooks = self.clone();
            async move {
                // A failed dispatch does not hold back what is already due.
                let dispatched = webhooks.dispatch().await;
                webhooks.send_due().await?;
                dispatched.map(|_| ())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn inbound_verification_checks_time_and_every_valid_secret() {
        let (old, new) = (new_secret(), new_secret());
        let now = 1_700_000_000;
        let sig = sign(&old, "msg_1", now, "{}").unwrap();
        let check = |secrets: &[&str], ts: i64, body: &str| {
            verify(
                secrets,
                Some("msg_1"),
                Some(&ts.to_string()),
                Some(&format!("v1,x {sig}")),
                body,
                now,
            )
        };
        assert_eq!(check(&[&new, &old], now, "{}"), Ok(()));
        assert_eq!(check(&[&new], now, "{}"), Err(VerifyError::Signature));
        assert_eq!(check(&[&old], now, "{ }"), Err(VerifyError::Signature));
        assert_eq!(check(&[&old], now - 301, "{}"), Err(VerifyError::Timestamp));
        assert_eq!(
            verify(&[&old], None, None, None, "{}", now),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn inward_addresses_are_refused_unless_allowed() {
        let mut s = WebhookSettings {
            in_process: false,
            interval_ms: 1000,
            retry_schedule_ms: "1".into(),
            disable_after_failures: 1,
            timeout_ms: 1000,
            allow_private: false,
            allow_http: false,
            horizon_hours: 1,
            rotation_overlap_secs: 1,
        };
        for url in [
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://localhost/hook",
            "http://example.com/hook",
            "https://user:pw@example.com/hook",
        ] {
            assert!(refuse_url(url, &s).is_some(), "{url}");
        }
        assert!(refuse_url("https://hooks.example.com/x", &s).is_none());
        s.allow_private = true;
        s.allow_http = true;
        assert!(refuse_url("http://127.0.0.1:9000/hook", &s).is_none());
    }
}
