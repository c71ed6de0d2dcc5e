-- Tenant read model (projection `tenants`): settings, feature flags, members and roles, folded
-- by the tenant aggregate's own `apply` from its events.
CREATE TABLE rm_tenants (
    tenant_id  text        PRIMARY KEY,
    version    bigint      NOT NULL,
    state      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL
);
