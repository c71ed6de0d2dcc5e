-- Where the Kafka relay stands in the event store: the last event the broker acknowledged.
CREATE TABLE relay_checkpoints (
    relay_name     text PRIMARY KEY,
    transaction_id xid8   NOT NULL DEFAULT '0',
    position       bigint NOT NULL DEFAULT 0,
    published      bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per projection: written in the same transaction as every event it applies.
CREATE TABLE projection_status (
    projection        text PRIMARY KEY,
    applied_events    bigint      NOT NULL DEFAULT 0,
    last_position     bigint      NOT NULL DEFAULT 0,
    last_event_id     uuid,
    last_recorded_at  timestamptz,
    last_applied_at   timestamptz,
    last_error        text,
    last_error_at     timestamptz,
    rebuilt_at        timestamptz
);

-- Events a projection could not apply (undecodable, or the projection refused them).
CREATE TABLE dead_letters (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection    text        NOT NULL,
    topic         text        NOT NULL,
    kafka_partition integer   NOT NULL,
    kafka_offset  bigint      NOT NULL,
    message_key   text,
    payload       text        NOT NULL,
    error         text        NOT NULL,
    event_id      uuid,
    tenant_id     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    retried_at    timestamptz,
    resolved_at   timestamptz
);
CREATE INDEX dead_letters_open_idx ON dead_letters (projection, id) WHERE resolved_at IS NULL;

-- The per-tenant conversations read model (projection `conversations`). `version` is the last
-- applied sequence of the conversation: an event at or below it is a redelivery and is skipped.
CREATE TABLE rm_conversations (
    tenant_id       text        NOT NULL,
    conversation_id uuid        NOT NULL,
    status          text        NOT NULL,
    escalated       boolean     NOT NULL DEFAULT false,
    started_by      text        NOT NULL,
    channel         text        NOT NULL,
    question_count  integer     NOT NULL DEFAULT 0,
    last_question   text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         bigint      NOT NULL,
    last_position   bigint      NOT NULL,
    document        jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);
CREATE INDEX rm_conversations_recent_idx ON rm_conversations (tenant_id, updated_at DESC, conversation_id);
