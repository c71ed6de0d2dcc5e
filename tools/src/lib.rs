//! Tools that drive the service from outside, as a client or through the command bus: `bench`
//! (throughput and latency against a ceiling measured in the same run), `loadtest` (a mixed
//! scenario at a target rate, checked against performance budgets) and `seed` (a
//! deterministic demo data set). The server library does not depend on them.

pub mod bench;
pub mod bench_audit;
pub mod bench_kapa;
pub mod bench_reads;
pub mod bench_store;
pub mod bench_streaming;
pub mod budgets;
pub mod events;
pub mod loadtest;
pub mod memory;
pub mod plot;
pub mod seed;

/// Command output (a token, a document, a report) is the program's product, not a log line.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
