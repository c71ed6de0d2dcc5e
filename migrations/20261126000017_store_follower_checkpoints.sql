-- The embedded transport (docs/streaming.md): a projection that follows the event store itself
-- keeps where it is in its status row, moved in the transaction that applies the event.
ALTER TABLE projection_status
    ADD COLUMN store_transaction_id xid8,
    ADD COLUMN store_position       bigint;
