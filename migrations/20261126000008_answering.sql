-- Answering beyond the engine (docs/kapa.md): the questions read model keeps the answer text
-- (the fallback and reuse search it), what the guardrails redacted (counts per rule), why a
-- fallback answered, time to first chunk, and when the question was answered and resolved.
ALTER TABLE rm_questions
    ADD COLUMN answer_text    text,
    ADD COLUMN redactions     jsonb       NOT NULL DEFAULT '{}',
    ADD COLUMN fallback_reason text,
    ADD COLUMN first_chunk_ms bigint,
    ADD COLUMN answered_at    timestamptz,
    ADD COLUMN resolved_at    timestamptz;

-- Similar questions for the fallback: trigram similarity over the normalised question, only
-- among a tenant's upvoted answers.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX rm_questions_upvoted_trgm_idx ON rm_questions
    USING gin (normalized gin_trgm_ops) WHERE upvotes > 0 AND answer_text IS NOT NULL;
CREATE INDEX rm_questions_upvoted_normalized_idx ON rm_questions (tenant_id, normalized, asked_at)
    WHERE upvotes > 0 AND answer_text IS NOT NULL;

-- Sweeping interrupted questions looks at recent questions only.
CREATE INDEX events_questions_asked_idx ON events (recorded_at)
    WHERE aggregate_type = 'conversation' AND event_type = 'QuestionAsked';
