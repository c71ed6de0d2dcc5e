//! The HTTP face of the platform: routes, authentication, problems, OpenAPI, configuration and
//! start-up. The `answers` binary (crate `answers`) runs it; the tools (`answers-tools`) drive it.

pub mod auth;
pub mod config;
pub mod dto;
pub mod flags;
pub mod hardening;
pub mod lifecycle;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod quality;
pub mod rate_limit;
pub mod read_cache;
pub mod read_pool;
pub mod redis_link;
pub mod routes;
pub mod sign_in;
pub mod slo;
pub mod startup;
pub mod telemetry;
pub mod webhooks;
pub mod worker_endpoints;
pub mod workers;

pub use config::Settings;
pub use startup::Application;
