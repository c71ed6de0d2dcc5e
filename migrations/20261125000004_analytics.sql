-- Per-question facts for the analytics (projection `questions`): one row per question with its
-- outcome, feedback and conversation fate. `conversation_version` (the same on every row of a
-- conversation) is the last applied sequence of that conversation: redeliveries are skipped.
CREATE TABLE rm_questions (
    tenant_id            text        NOT NULL,
    question_id          uuid        NOT NULL,
    conversation_id      uuid        NOT NULL,
    asked_at             timestamptz NOT NULL,
    asked_by             text        NOT NULL,
    channel              text        NOT NULL,
    integration_id       text,
    text                 text        NOT NULL,
    normalized           text        NOT NULL,
    intent               text        NOT NULL,
    topic                text,
    status               text        NOT NULL,
    uncertain            boolean     NOT NULL DEFAULT false,
    latency_ms           bigint,
    engine               text,
    answer_id            uuid,
    question_chars       integer     NOT NULL,
    answer_chars         integer     NOT NULL DEFAULT 0,
    cited_sources        text[]      NOT NULL DEFAULT '{}',
    feedback             jsonb       NOT NULL DEFAULT '{}',
    upvotes              integer     NOT NULL DEFAULT 0,
    downvotes            integer     NOT NULL DEFAULT 0,
    downvote_reasons     text[]      NOT NULL DEFAULT '{}',
    resolved             boolean     NOT NULL DEFAULT false,
    escalated            boolean     NOT NULL DEFAULT false,
    conversation_version bigint      NOT NULL,
    PRIMARY KEY (tenant_id, question_id)
);
CREATE INDEX rm_questions_tenant_time_idx ON rm_questions (tenant_id, asked_at);
CREATE INDEX rm_questions_conversation_idx ON rm_questions (tenant_id, conversation_id);
CREATE INDEX rm_questions_answer_idx ON rm_questions (tenant_id, answer_id);
