-- Feedback forwarded to Kapa (docs/kapa.md): one row per feedback event, so each change is
-- forwarded at most once, retried across restarts, and its delivery state is visible to the
-- tenant's admin. Tenant-scoped like every table.
CREATE TABLE feedback_forwards (
    tenant_id        text        NOT NULL CHECK (tenant_id <> ''),
    event_id         uuid        NOT NULL,
    event_position   bigint      NOT NULL,
    conversation_id  uuid        NOT NULL,
    answer_id        uuid        NOT NULL,
    user_id          text        NOT NULL,
    engine_answer_id text        NOT NULL,
    -- pending: to send; delivered; failed: gave up after the attempts; superseded: a newer
    -- change of the same user's feedback on the same answer was forwarded instead.
    state            text        NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'superseded')),
    attempts         integer     NOT NULL DEFAULT 0,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE UNIQUE INDEX feedback_forwards_event_idx ON feedback_forwards (event_id);
CREATE INDEX feedback_forwards_due_idx ON feedback_forwards (next_attempt_at) WHERE state = 'pending';
CREATE INDEX feedback_forwards_answer_idx ON feedback_forwards (tenant_id, answer_id, user_id, event_position);

CREATE INDEX events_feedback_idx ON events (recorded_at)
    WHERE aggregate_type = 'conversation' AND event_type IN ('FeedbackGiven', 'FeedbackChanged');
CREATE INDEX events_sync_requests_idx ON events (recorded_at)
    WHERE aggregate_type = 'knowledge_source' AND event_type IN ('SyncRequested', 'SyncStarted');
