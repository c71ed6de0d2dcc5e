//! One test binary for all end-to-end tests (one link instead of many).
mod analytics;
mod audit;
mod auth;
mod bad_input;
mod commands_round_trip;
mod concurrency;
mod idempotency;
mod openapi;
mod read_models;
mod reader;
mod seed;
mod startup;
mod store;
mod store_follower;
mod streaming_projections;
mod streaming_relay;
mod unreadable_rows;
