//! The command side. [`CommandBus`] authorises a command, checks the tenant accepts commands,
//! honours its idempotency key, runs it through the cqrs-es aggregate and stores the resulting
//! events with their metadata. Errors keep domain rejections apart from infrastructure failures
//! all the way up ([`CommandError`]).

mod answering;
mod bus;
mod clock;
mod context;
mod error;
pub mod flags;
mod idempotency;
mod local_engine;
pub mod metrics;
mod outcome;
mod sweeper;

pub use answering::{AnsweringSettings, Engines, FALLBACK_ENGINE, REUSE_ENGINE};
pub use bus::{AskQuestion, CommandBus, TraceContext};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::CommandContext;
pub use error::{CommandError, Rejection};
pub use idempotency::IdempotencySettings;
pub use local_engine::LocalAnswerEngine;
pub use outcome::{AnswerOutcome, AnswerStatus, CommandOutcome};
pub use sweeper::{PendingQuestion, Sweeper};
