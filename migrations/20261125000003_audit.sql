-- The audit trail (projection `audit`): every event as an entry compliance reviewers can filter.
CREATE TABLE rm_audit (
    event_id       uuid        PRIMARY KEY,
    tenant_id      text        NOT NULL,
    position       bigint      NOT NULL,
    recorded_at    timestamptz NOT NULL,
    actor_id       text        NOT NULL,
    actor_role     text        NOT NULL,
    action         text        NOT NULL,
    object_type    text        NOT NULL,
    object_id      text        NOT NULL,
    sequence       bigint      NOT NULL,
    correlation_id text        NOT NULL,
    causation_id   text,
    outcome        text        NOT NULL,
    details        jsonb       NOT NULL
);
CREATE INDEX rm_audit_tenant_position_idx ON rm_audit (tenant_id, position);
CREATE INDEX rm_audit_tenant_actor_idx ON rm_audit (tenant_id, actor_id, position);
CREATE INDEX rm_audit_tenant_object_idx ON rm_audit (tenant_id, object_type, object_id, position);

-- Who read the audit trail, what and when: reading it is itself audited.
CREATE TABLE audit_reads (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text        NOT NULL,
    actor_id   text        NOT NULL,
    actor_role text        NOT NULL,
    route      text        NOT NULL,
    query      text        NOT NULL,
    read_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_reads_tenant_idx ON audit_reads (tenant_id, id);
