-- Knowledge sources read model (projection `sources`): current state, sync history, last error.
CREATE TABLE rm_sources (
    tenant_id       text        NOT NULL,
    source_id       uuid        NOT NULL,
    kind            text        NOT NULL,
    name            text        NOT NULL,
    location        text        NOT NULL,
    status          text        NOT NULL,
    sync_state      text        NOT NULL,
    document_count  bigint,
    last_error      text,
    last_synced_at  timestamptz,
    added_at        timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         bigint      NOT NULL,
    history         jsonb       NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, source_id)
);
