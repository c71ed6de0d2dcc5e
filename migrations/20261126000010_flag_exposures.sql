-- Feature-flag adoption (docs/feature-flags.md): who was exposed to which variation of a flag,
-- how often it was evaluated for them, and who used the flagged feature. One row per tenant,
-- flag and user; evaluation counts are flushed in batches from memory.
CREATE TABLE flag_exposures (
    tenant_id   text        NOT NULL CHECK (tenant_id <> ''),
    flag        text        NOT NULL,
    user_id     text        NOT NULL,
    variation   text        NOT NULL CHECK (variation IN ('on', 'off')),
    evaluations bigint      NOT NULL DEFAULT 0,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, flag, user_id, variation)
);
CREATE INDEX flag_exposures_flag_idx ON flag_exposures (flag, variation);

CREATE TABLE flag_usage (
    tenant_id  text        NOT NULL CHECK (tenant_id <> ''),
    flag       text        NOT NULL,
    user_id    text        NOT NULL,
    uses       bigint      NOT NULL DEFAULT 0,
    first_used timestamptz NOT NULL DEFAULT now(),
    last_used  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, flag, user_id)
);
