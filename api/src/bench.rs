//! `answers bench`: throughput and latency of real commands over HTTP, beside the ceiling below
//! us (plain single-row INSERT + COMMIT of an equivalent event row, same concurrency).
use clap::Args;

use crate::Settings;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Commands in all.
    #[arg(long, default_value_t = 4000)]
    pub commands: usize,
}

pub async fn run(_settings: Settings, _args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
