//! The identity tables (migration `..._identity.sql`): sign-in attempts, sessions with their
//! refresh-token families, second factors, API keys. Every secret is stored as a digest
//! ([`crate::secret::digest`]) except the TOTP seed, which codes are computed from.
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::secret::{digest, random_token};

/// A sign-in in progress.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The tenant signed in to; `None` for a platform operator.
    pub tenant_id: Option<String>,
    /// The provider's word.
    pub provider: String,
    /// The id_token must carry it.
    pub nonce: String,
    /// PKCE: sent with the code.
    pub code_verifier: String,
    /// Where the provider was asked to return.
    pub redirect_uri: String,
}

/// A session as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    /// Its id (the access tokens' `sid`).
    pub session_id: Uuid,
    /// Its tenant; `None` for a platform operator.
    pub tenant_id: Option<String>,
    /// Who.
    pub user_id: String,
    /// Signed in with.
    pub provider: String,
    /// With a second factor.
    pub mfa: bool,
    /// The browser or client that signed in.
    pub user_agent: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Last refresh or request.
    pub last_seen_at: DateTime<Utc>,
    /// Absolute end.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The CSRF token's digest (cookie-authenticated writes).
    pub csrf_hash: Vec<u8>,
}

/// A new session's secrets, handed out once.
#[derive(Debug)]
pub struct Issued {
    /// The session.
    pub session: Session,
    /// Its first refresh token.
    pub refresh_token: String,
    /// Its CSRF token.
    pub csrf_token: String,
}

/// What a session check found.
#[derive(Debug)]
pub enum SessionState {
    /// In force (and now touched).
    Active(Session),
    /// Signed out or revoked.
    Revoked,
    /// Past its idle or absolute timeout.
    Expired,
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Refreshed {
    /// A new refresh token; the presented one is used up.
    Rotated {
        /// The session.
        session: Session,
        /// The next refresh token.
        refresh_token: String,
    },
    /// The token was used before: the session is revoked now.
    Reused {
        /// The revoked session.
        session: Session,
    },
    /// The session is revoked or expired.
    Ended,
    /// No such token.
    Unknown,
}

/// A member's TOTP factor.
#[derive(Debug, Clone)]
pub struct Factor {
    /// The seed.
    pub secret: Vec<u8>,
    /// Confirmed with a first code.
    pub confirmed: bool,
    /// The last step a code was accepted for.
    pub last_step: i64,
}

/// An API key as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    /// Its tenant.
    pub tenant_id: String,
    /// Its id.
    pub key_id: String,
    /// What it is for.
    pub name: String,
    /// Its role's word.
    pub role: String,
    /// Its visible start.
    pub prefix: String,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Last request made with it.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The identity tables.
#[derive(Clone)]
pub struct IdentityStore {
    pool: PgPool,
}

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

impl IdentityStore {
    /// The store on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Deletes what can never be used again: finished or expired sign-in attempts and
    /// challenges, and sessions (with their refresh tokens) ended more than `keep` ago (kept
    /// that long so a late refresh-token reuse is still recognised and answered as such).
    pub async fn purge(&self, keep: std::time::Duration) -> Result<u64, sqlx::Error> {
        let mut removed = 0;
        removed += sqlx::query!("DELETE FROM sign_in_attempts WHERE expires_at < now()")
            .execute(&self.pool)
            .await?
            .rows_affected();
        removed += sqlx::query!("DELETE FROM mfa_challenges WHERE expires_at < now()")
            .execute(&self.pool)
            .await?
            .rows_affected();
        removed += sqlx::query!(
            "DELETE FROM sessions
             WHERE COALESCE(revoked_at, expires_at) < now() - make_interval(secs => $1)",
            secs(keep),
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(removed)
    }

    /// Records a sign-in attempt under its `state`.
    pub async fn start_attempt(
        &self,
        state: &str,
        attempt: &Attempt,
        ttl: std::time::Duration,
    ) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "INSERT INTO sign_in_attempts (state_hash, tenant_id, provider, nonce, code_verifier,
               redirect_uri, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
            digest(state),
            attempt.tenant_id,
            attempt.provider,
            attempt.nonce,
            attempt.code_verifier,
            attempt.redirect_uri,
            secs(ttl),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the attempt of `state`: once, before it expires.
    pub async fn take_attempt(&self, state: &str) -> Result<Option<Attempt>, sqlx::Error> {
        let row = sqlx::query!(
            "UPDATE sign_in_attempts SET used_at = now()
             WHERE state_hash = $1 AND used_at IS NULL AND expires_at > now()
             RETURNING tenant_id, provider, nonce, code_verifier, redirect_uri",
            digest(state),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Attempt {
            tenant_id: r.tenant_id,
            provider: r.provider,
            nonce: r.nonce,
            code_verifier: r.code_verifier,
            redirect_uri: r.redirect_uri,
        }))
    }

    /// Opens a session with its first refresh token.
    pub async fn create_session(
        &self,
        tenant_id: Option<&str>,
        user_id: &str,
        provider: &str,
        mfa: bool,
        user_agent: Option<&str>,
        absolute: std::time::Duration,
    ) -> Result<Issued, sqlx::Error> {
        let (refresh_token, csrf_token) = (random_token(32), random_token(32));
        let mut tx = self.pool.begin().await?;
        let session = sqlx::query_as!(
            Session,
            "INSERT INTO sessions (session_id, tenant_id, user_id, provider, mfa, csrf_hash,
               user_agent, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
             RETURNING session_id, tenant_id, user_id, provider, mfa, user_agent, created_at,
               last_seen_at, expires_at, revoked_at, csrf_hash",
            Uuid::now_v7(),
            tenant_id,
            user_id,
            provider,
            mfa,
            digest(&csrf_token),
            user_agent.map(|u| u.chars().take(300).collect::<String>()),
            secs(absolute),
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO refresh_tokens (token_hash, session_id, tenant_id) VALUES ($1, $2, $3)",
            digest(&refresh_token),
            session.session_id,
            tenant_id,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Issued {
            session,
            refresh_token,
            csrf_token,
        })
    }

    /// Rotates a refresh token. A token presented twice revokes its whole session: whoever
    /// holds the stolen copy and whoever holds the rotated one are both signed out.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        idle: std::time::Duration,
    ) -> Result<Refreshed, sqlx::Error> {
        let hash = digest(refresh_token);
        let mut tx = self.pool.begin().await?;
        let token = sqlx::query!(
            "SELECT session_id, used_at FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
            hash,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token) = token else {
            return Ok(Refreshed::Unknown);
        };
        if token.used_at.is_some() {
            let session =
                revoke_where_id(&mut tx, token.session_id, "refresh_token_reused").await?;
            tx.commit().await?;
            return Ok(match session {
                Some(session) => Refreshed::Reused { session },
                None => Refreshed::Ended,
            });
        }
        let session = sqlx::query_as!(
            Session,
            "UPDATE sessions SET last_seen_at = now()
             WHERE session_id = $1 AND revoked_at IS NULL AND expires_at > now()
               AND last_seen_at > now() - make_interval(secs => $2)
             RETURNING session_id, tenant_id, user_id, provider, mfa, user_agent, created_at,
               last_seen_at, expires_at, revoked_at, csrf_hash",
            token.session_id,
            secs(idle),
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(session) = session else {
            return Ok(Refreshed::Ended);
        };
        let next = random_token(32);
        sqlx::query!(
            "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1",
            hash
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO refresh_tokens (token_hash, session_id, tenant_id) VALUES ($1, $2, $3)",
            digest(&next),
            session.session_id,
            session.tenant_id,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Refreshed::Rotated {
            session,
            refresh_token: next,
        })
    }

    /// Whether a session is in force; touches it (the idle timeout counts from here).
    pub async fn check(
        &self,
        session_id: Uuid,
        idle: std::time::Duration,
    ) -> Result<SessionState, sqlx::Error> {
        let session = sqlx::query_as!(
            Session,
            "UPDATE sessions SET last_seen_at = now()
             WHERE session_id = $1 AND revoked_at IS NULL AND expires_at > now()
               AND last_seen_at > now() - make_interval(secs => $2)
             RETURNING session_id, tenant_id, user_id, provider, mfa, user_agent, created_at,
               last_seen_at, expires_at, revoked_at, csrf_hash",
            session_id,
            secs(idle),
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(s) = session {
            return Ok(SessionState::Active(s));
        }
        let revoked = sqlx::query_scalar!(
            "SELECT revoked_at IS NOT NULL AS \"revoked!\" FROM sessions WHERE session_id = $1",
            session_id
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match revoked {
            Some(false) => SessionState::Expired,
            _ => SessionState::Revoked,
        })
    }

    /// A person's sessions still in force, newest first.
    pub async fn sessions_of(
        &self,
        tenant_id: Option<&str>,
        user_id: &str,
    ) -> Result<Vec<Session>, sqlx::Error> {
        sqlx::query_as!(
            Session,
            "SELECT session_id, tenant_id, user_id, provider, mfa, user_agent, created_at,
               last_seen_at, expires_at, revoked_at, csrf_hash
             FROM sessions
             WHERE tenant_id IS NOT DISTINCT FROM $1 AND user_id = $2 AND revoked_at IS NULL
               AND expires_at > now()
             ORDER BY created_at DESC",
            tenant_id,
            user_id,
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Revokes one of a person's sessions; `None` when it is not theirs or already ended.
    pub async fn revoke_session(
        &self,
        tenant_id: Option<&str>,
        user_id: &str,
        session_id: Uuid,
        reason: &str,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        sqlx::query_scalar!(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = $4
             WHERE session_id = $3 AND tenant_id IS NOT DISTINCT FROM $1 AND user_id = $2
               AND revoked_at IS NULL
             RETURNING session_id",
            tenant_id,
            user_id,
            session_id,
            reason,
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// Revokes every session of a person.
    pub async fn revoke_all(
        &self,
        tenant_id: Option<&str>,
        user_id: &str,
        reason: &str,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar!(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = $3
             WHERE tenant_id IS NOT DISTINCT FROM $1 AND user_id = $2 AND revoked_at IS NULL
             RETURNING session_id",
            tenant_id,
            user_id,
            reason,
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Records a sign-in waiting for its second factor; returns the challenge token.
    pub async fn create_challenge(
        &self,
        tenant_id: &str,
        user_id: &str,
        provider: &str,
        ttl: std::time::Duration,
    ) -> Result<String, sqlx::Error> {
        let token = random_token(32);
        sqlx::query!(
            "INSERT INTO mfa_challenges (token_hash, tenant_id, user_id, provider, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
            digest(&token),
            tenant_id,
            user_id,
            provider,
            secs(ttl),
        )
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// The challenge's tenant, user and provider, while it is open (not used, not expired,
    /// fewer than five wrong codes).
    pub async fn challenge(
        &self,
        token: &str,
    ) -> Result<Option<(String, String, String)>, sqlx::Error> {
        let row = sqlx::query!(
            "SELECT tenant_id, user_id, provider FROM mfa_challenges
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() AND failures < 5",
            digest(token),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.tenant_id, r.user_id, r.provider)))
    }

    /// Closes a challenge (`true` once: two requests racing with one code get one session).
    pub async fn close_challenge(&self, token: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query!(
            "UPDATE mfa_challenges SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL",
            digest(token),
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts a wrong code against a challenge.
    pub async fn fail_challenge(&self, token: &str) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "UPDATE mfa_challenges SET failures = failures + 1 WHERE token_hash = $1",
            digest(token),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The member's factor, if any.
    pub async fn factor(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> Result<Option<Factor>, sqlx::Error> {
        let row = sqlx::query!(
            "SELECT secret, confirmed_at, last_step FROM mfa_factors
             WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            user_id,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Factor {
            secret: r.secret,
            confirmed: r.confirmed_at.is_some(),
            last_step: r.last_step,
        }))
    }

    /// Stores a new, unconfirmed seed (replacing an unconfirmed one); `false` when a confirmed
    /// factor exists.
    pub async fn put_pending_factor(
        &self,
        tenant_id: &str,
        user_id: &str,
        secret: &[u8],
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query!(
            "INSERT INTO mfa_factors (tenant_id, user_id, secret) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET secret = EXCLUDED.secret,
               last_step = 0, created_at = now()
             WHERE mfa_factors.confirmed_at IS NULL",
            tenant_id,
            user_id,
            secret,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Accepts a code's step once: `false` when that step (or a later one) was used already.
    /// The first accepted code confirms the factor.
    pub async fn use_step(
        &self,
        tenant_id: &str,
        user_id: &str,
        step: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query!(
            "UPDATE mfa_factors SET last_step = $3, confirmed_at = COALESCE(confirmed_at, now())
             WHERE tenant_id = $1 AND user_id = $2 AND last_step < $3",
            tenant_id,
            user_id,
            step,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the member's recovery codes with these (given in clear, stored as digests).
    pub async fn set_recovery_codes(
        &self,
        tenant_id: &str,
        user_id: &str,
        codes: &[String],
    ) -> Result<(), sqlx::Error> {
        let hashes: Vec<Vec<u8>> = codes
            .iter()
            .map(|c| digest(&crate::totp::normalise_recovery_code(c)))
            .collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            user_id,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO mfa_recovery_codes (tenant_id, user_id, code_hash)
             SELECT $1, $2, h FROM UNNEST($3::bytea[]) AS h",
            tenant_id,
            user_id,
            &hashes,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Uses a recovery code: `true` once.
    pub async fn use_recovery_code(
        &self,
        tenant_id: &str,
        user_id: &str,
        code: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query!(
            "UPDATE mfa_recovery_codes SET used_at = now()
             WHERE tenant_id = $1 AND user_id = $2 AND code_hash = $3 AND used_at IS NULL",
            tenant_id,
            user_id,
            digest(&crate::totp::normalise_recovery_code(code)),
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes the member's factor and recovery codes.
    pub async fn delete_factor(&self, tenant_id: &str, user_id: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "DELETE FROM mfa_factors WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            user_id
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            user_id
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Stores a new API key's digest.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_api_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        key: &str,
        name: &str,
        role: &str,
        prefix: &str,
        created_by: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "INSERT INTO api_keys (tenant_id, key_id, key_hash, name, role, prefix, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            tenant_id,
            key_id,
            digest(key),
            name,
            role,
            prefix,
            created_by,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a key whose creation was refused.
    pub async fn delete_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "DELETE FROM api_keys WHERE tenant_id = $1 AND key_id = $2",
            tenant_id,
            key_id
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes a key at once (requests with it are refused from now on).
    pub async fn revoke_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
             WHERE tenant_id = $1 AND key_id = $2",
            tenant_id,
            key_id
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The key in force with this secret, its last use recorded.
    pub async fn use_api_key(&self, key: &str) -> Result<Option<ApiKey>, sqlx::Error> {
        sqlx::query_as!(
            ApiKey,
            "UPDATE api_keys SET last_used_at = now()
             WHERE key_hash = $1 AND revoked_at IS NULL
             RETURNING tenant_id, key_id, name, role, prefix, created_by, created_at,
               last_used_at, revoked_at",
            digest(key),
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// The tenant's keys, newest first.
    pub async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>, sqlx::Error> {
        sqlx::query_as!(
            ApiKey,
            "SELECT tenant_id, key_id, name, role, prefix, created_by, created_at, last_used_at,
               revoked_at
             FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC",
            tenant_id,
        )
        .fetch_all(&self.pool)
        .await
    }
}

async fn revoke_where_id(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    session_id: Uuid,
    reason: &str,
) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as!(
        Session,
        "UPDATE sessions SET revoked_at = COALESCE(revoked_at, now()),
           revoked_reason = COALESCE(revoked_reason, $2)
         WHERE session_id = $1
         RETURNING session_id, tenant_id, user_id, provider, mfa, user_agent, created_at,
           last_seen_at, expires_at, revoked_at, csrf_hash",
        session_id,
        reason,
    )
    .fetch_optional(&mut **tx)
    .await
}
