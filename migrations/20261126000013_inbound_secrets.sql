-- The secret a tenant's connectors sign inbound webhooks with (docs/webhooks.md, inbound);
-- the previous one stays valid for an overlap after a rotation.
CREATE TABLE inbound_secrets (
    tenant_id       text PRIMARY KEY,
    secret          text NOT NULL,
    previous_secret text,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
