//! The Kapa.ai integration (docs/kapa.md): [`client`] speaks Kapa's HTTP API, [`stream`] reads
//! its streamed answers, [`resilience`] keeps a failing Kapa from hurting the platform, and
//! [`KapaEngine`] answers questions through all three.
pub mod client;
pub mod engine;
pub mod resilience;
pub mod stream;

pub use client::{CallError, KapaClient, KapaSource};
pub use engine::{key_failure, KapaEngine, KapaSettings, KAPA_ENGINE};
pub use resilience::{BreakerState, BreakerStatus};
