-- Freshness on every read model read counts the events of the projection's aggregate types
-- stored after its position: this index makes that a range over the lag, not the history.
CREATE INDEX events_type_position_idx ON events (aggregate_type, position);
