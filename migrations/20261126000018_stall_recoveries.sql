-- Stalled consumers (docs/projections.md): a projection with events waiting and no progress for
-- a while has its consumer recreated; how often, and when last, is kept with its status.
ALTER TABLE projection_status
    ADD COLUMN stall_recoveries bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_stall_at    timestamptz;
