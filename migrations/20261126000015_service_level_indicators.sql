-- Service level indicators, per minute (docs/observability.md). Every instance adds what it
-- counted (upserts that add), so the figures are the platform's, survive restarts and are there
-- without Prometheus. Platform tables: no tenant's rows, no grant to the API's role (the
-- operator routes read them through the owner's pool).

-- Good and total events of one indicator in one minute.
CREATE TABLE sli_minutes (
    series text NOT NULL CHECK (series IN (
        'commands_availability', 'reads_availability', 'latency', 'freshness',
        'engine_availability')),
    minute timestamptz NOT NULL CHECK (date_trunc('minute', minute) = minute),
    good bigint NOT NULL CHECK (good >= 0),
    total bigint NOT NULL CHECK (total >= good),
    PRIMARY KEY (series, minute)
);

-- A histogram of one quantity in one minute: `counts[i]` observations in bucket i (not
-- cumulative; the last bucket is +Inf; the bounds are the build's, named by the series), their
-- sum and the largest one.
CREATE TABLE distribution_minutes (
    series text NOT NULL CHECK (series IN (
        'http_latency_seconds', 'engine_latency_seconds', 'projection_lag_seconds')),
    minute timestamptz NOT NULL CHECK (date_trunc('minute', minute) = minute),
    counts bigint[] NOT NULL CHECK (array_ndims(counts) = 1),
    sum double precision NOT NULL,
    max double precision NOT NULL,
    PRIMARY KEY (series, minute)
);

CREATE INDEX sli_minutes_minute ON sli_minutes (minute);
CREATE INDEX distribution_minutes_minute ON distribution_minutes (minute);

GRANT SELECT, INSERT, UPDATE, DELETE ON sli_minutes, distribution_minutes TO answers_system;
