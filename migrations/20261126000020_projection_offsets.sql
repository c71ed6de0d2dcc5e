-- Kafka offsets of the projections, kept in PostgreSQL (docs/streaming.md, "Partition
-- ownership"): moved in the transaction that applies the event, so a crash can never leave an
-- event applied and its offset behind or the reverse, and no Kafka group session has to expire
-- before a restarted process reads on. One row per consumer group, topic and partition; the
-- offset is the next one to read.
CREATE TABLE projection_offsets (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL CHECK (kafka_partition >= 0),
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);

-- A platform table (every tenant's events pass through one partition): the API's role has no
-- access, the projections run as the owner.
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_offsets TO answers_system;
