-- The event store. cqrs-es reads and writes the first seven columns (through our own
-- repository, see docs/event-store.md); everything after them is what a compliance reviewer,
-- the Kafka relay and the projections need and postgres-es cannot fill in.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence > 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    -- Global order of insertion. Not commit order: see transaction_id.
    position        bigint      GENERATED ALWAYS AS IDENTITY,
    event_id        uuid        NOT NULL,
    tenant_id       text        NOT NULL CHECK (tenant_id <> ''),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- The inserting transaction. Readers use (transaction_id, position) below the oldest running
    -- transaction so that a late commit can never appear behind them (docs/event-store.md).
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    actor_id        text        NOT NULL,
    actor_role      text        NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text,
    idempotency_key text,
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_position_key ON events (position);
CREATE UNIQUE INDEX events_event_id_key ON events (event_id);
CREATE INDEX events_commit_order_idx ON events (transaction_id, position);
CREATE INDEX events_tenant_idx ON events (tenant_id, position);
CREATE INDEX events_correlation_idx ON events (correlation_id);

-- Events are facts: nothing may change or remove them once written.
CREATE FUNCTION events_are_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Idempotency: a key is claimed (pending) before a command runs and settled in the same
-- transaction that stores the command's events, so a crash can never leave events stored
-- under a key that still looks unused.
CREATE TABLE idempotency_keys (
    tenant_id           text        NOT NULL,
    user_id             text        NOT NULL,
    idempotency_key     text        NOT NULL,
    request_fingerprint text        NOT NULL,
    state               text        NOT NULL CHECK (state IN ('pending', 'committed', 'rejected')),
    locked_until        timestamptz NOT NULL,
    aggregate_type      text,
    aggregate_id        text,
    first_sequence      bigint,
    last_sequence       bigint,
    response_status     smallint,
    response_body       jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    settled_at          timestamptz,
    PRIMARY KEY (tenant_id, user_id, idempotency_key)
);
