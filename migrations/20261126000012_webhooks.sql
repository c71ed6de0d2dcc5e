-- Webhooks (docs/webhooks.md): the tenants' endpoints with their signing secrets (needed in
-- clear to sign; the events only name the endpoint), and one delivery per endpoint and event.

CREATE TABLE webhook_endpoints (
    tenant_id       text NOT NULL,
    endpoint_id     text NOT NULL,
    url             text NOT NULL,
    topics          text[] NOT NULL,
    secret          text NOT NULL,
    previous_secret text,
    previous_until  timestamptz,
    enabled         boolean NOT NULL DEFAULT true,
    failure_streak  integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, endpoint_id)
);

CREATE TABLE webhook_deliveries (
    tenant_id       text NOT NULL,
    delivery_id     uuid NOT NULL,
    endpoint_id     text NOT NULL,
    event_id        uuid NOT NULL,
    topic           text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending', -- pending | delivered | failed
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    PRIMARY KEY (tenant_id, delivery_id),
    UNIQUE (tenant_id, endpoint_id, event_id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
