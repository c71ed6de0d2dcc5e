//! The resident memory of this process, sampled while a workload runs: the benchmarks run the
//! service in-process, so this is the service's memory (with its clients').
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The resident set of this process now (Linux; `None` elsewhere).
pub fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Samples [`resident_mib`] every 100 ms until dropped; `peak()` is the largest seen.
pub struct RssSampler {
    peak: Arc<Mutex<Option<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start() -> Self {
        let peak = Arc::new(Mutex::new(resident_mib()));
        let task = tokio::spawn({
            let peak = peak.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let (Some(now), Ok(mut peak)) = (resident_mib(), peak.lock()) {
                        *peak = Some(peak.map_or(now, |p: f64| p.max(now)));
                    }
                }
            }
        });
        Self { peak, task }
    }

    pub fn peak(&self) -> Option<f64> {
        let now = resident_mib();
        let seen = self.peak.lock().ok().and_then(|p| *p);
        match (seen, now) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
