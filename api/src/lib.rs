//! The HTTP face of the platform and the `answers` binary.

pub mod auth;
pub mod bench;
pub mod bench_audit;
pub mod bench_streaming;
pub mod cli;
pub mod config;
pub mod dto;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod seed;
pub mod startup;
pub mod telemetry;

pub use config::Settings;
pub use startup::Application;
