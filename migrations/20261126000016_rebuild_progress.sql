-- A rebuild's progress in the projection's status (docs/projections.md, docs/metrics.md): when it
-- started, the store position it reads up to before the swap, how far it got. NULL when no
-- rebuild runs.
ALTER TABLE projection_status
    ADD COLUMN rebuild_started_at timestamptz,
    ADD COLUMN rebuild_target     bigint,
    ADD COLUMN rebuild_position   bigint,
    ADD COLUMN rebuild_applied    bigint;
