-- Identity (docs/identity.md): sign-in attempts, sessions and their refresh tokens, second
-- factors, API keys. Secrets are stored as SHA-256 digests (they are random, 256-bit: a slow hash
-- adds nothing); the TOTP seed is needed in clear to compute codes and is only readable by the
-- service's role. Rows of a tenant carry its id first; platform operators' rows have no tenant.

-- One authorization-code flow in progress: `state` (hashed) is single-use and short-lived.
CREATE TABLE sign_in_attempts (
    state_hash    bytea PRIMARY KEY,
    tenant_id     text,           -- null: a platform operator signing in
    provider      text NOT NULL,
    nonce         text NOT NULL,
    code_verifier text NOT NULL,
    redirect_uri  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX sign_in_attempts_expiry ON sign_in_attempts (expires_at);

-- A signed-in session: one refresh-token family.
CREATE TABLE sessions (
    session_id     uuid PRIMARY KEY,
    tenant_id      text,          -- null: a platform operator's session
    user_id        text NOT NULL,
    provider       text NOT NULL,
    mfa            boolean NOT NULL,
    csrf_hash      bytea NOT NULL,
    user_agent     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_member ON sessions (tenant_id, user_id) WHERE revoked_at IS NULL;

-- Every refresh token ever issued for a session; a used one presented again revokes the family.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    tenant_id  text,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- A sign-in waiting for its second factor.
CREATE TABLE mfa_challenges (
    token_hash bytea PRIMARY KEY,
    tenant_id  text NOT NULL,
    user_id    text NOT NULL,
    provider   text NOT NULL,
    failures   integer NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

-- A member's TOTP factor; `last_step` refuses a code's replay.
CREATE TABLE mfa_factors (
    tenant_id    text NOT NULL,
    user_id      text NOT NULL,
    secret       bytea NOT NULL,
    confirmed_at timestamptz,
    last_step    bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE mfa_recovery_codes (
    tenant_id text NOT NULL,
    user_id   text NOT NULL,
    code_hash bytea NOT NULL,
    used_at   timestamptz,
    PRIMARY KEY (tenant_id, user_id, code_hash)
);

-- Server-to-server credentials of a tenant.
CREATE TABLE api_keys (
    tenant_id    text NOT NULL,
    key_id       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    name         text NOT NULL,
    role         text NOT NULL,
    prefix       text NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, key_id)
);
