//! Per-job resource aggregates from Docker stats samples (spec §4.9): CPU percent of one CPU and
//! memory in MB, peak and time-weighted mean. Pure arithmetic; the executor feeds it samples.

use serde::{Deserialize, Serialize};

use crate::metadata::JobMetrics;

/// One stats sample, already turned into the two numbers we keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// CPU use since the previous sample, percent of one CPU.
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
}

/// Running aggregates. Serialisable so that they survive an agent restart while the container
/// keeps running (the executor saves them beside its scratch files).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The container the samples came from: a different container starts afresh.
    #[serde(default)]
    pub container_id: String,
    samples: u64,
    cpu_sum: f64,
    cpu_peak: f64,
    mem_mb_sum: f64,
    mem_mb_peak: f64,
}

impl Aggregate {
    /// Adds a sample and says whether it raised a peak. Samples arrive at Docker's fixed
    /// interval (about 1 s), so the mean of the samples is the time-weighted mean.
    pub fn add(&mut self, sample: Sample) -> bool {
        let mem_mb = sample.memory_bytes as f64 / (1024.0 * 1024.0);
        let cpu = if sample.cpu_percent.is_finite() {
            sample.cpu_percent.max(0.0)
        } else {
            0.0
        };
        let peak_rose = cpu > self.cpu_peak || mem_mb > self.mem_mb_peak;
        self.samples += 1;
        self.cpu_sum += cpu;
        self.cpu_peak = self.cpu_peak.max(cpu);
        self.mem_mb_sum += mem_mb;
        self.mem_mb_peak = self.mem_mb_peak.max(mem_mb);
        peak_rose
    }

    /// Empty aggregates for the samples of one container.
    pub fn for_container(container_id: String) -> Aggregate {
        Aggregate {
            container_id,
            ..Aggregate::default()
        }
    }

    /// How many samples were added.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The aggregates so far (zeros before the first sample).
    pub fn metrics(&self) -> JobMetrics {
        let count = self.samples.max(1) as f64;
        JobMetrics {
            cpu_peak: self.cpu_peak,
            cpu_mean: self.cpu_sum / count,
            mem_mb_peak: self.mem_mb_peak,
            mem_mb_mean: self.mem_mb_sum / count,
        }
    }
}

/// CPU percent of one CPU between two cumulative readings, as `docker stats` computes it:
/// container CPU time delta over system CPU time delta, times the number of CPUs, times 100.
pub fn cpu_percent(
    total_usage: u64,
    previous_total_usage: u64,
    system_usage: u64,
    previous_system_usage: u64,
    online_cpus: u32,
) -> f64 {
    let container_delta = total_usage.saturating_sub(previous_total_usage) as f64;
    let system_delta = system_usage.saturating_sub(previous_system_usage) as f64;
    if system_delta <= 0.0 || container_delta <= 0.0 {
        return 0.0;
    }
    container_delta / system_delta * f64::from(online_cpus.max(1)) * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_and_means() {
        let mut aggregate = Aggregate::default();
        assert_eq!(aggregate.metrics(), JobMetrics::default());
        assert!(aggregate.add(Sample {
            cpu_percent: 50.0,
            memory_bytes: 10 * 1024 * 1024,
        }));
        assert!(aggregate.add(Sample {
            cpu_percent: 150.0,
            memory_bytes: 30 * 1024 * 1024,
        }));
        assert!(!aggregate.add(Sample {
            cpu_percent: 100.0,
            memory_bytes: 20 * 1024 * 1024,
        }));
        let metrics = aggregate.metrics();
        assert_eq!(metrics.cpu_peak, 150.0);
        assert_eq!(metrics.cpu_mean, 100.0);
        assert_eq!(metrics.mem_mb_peak, 30.0);
        assert_eq!(metrics.mem_mb_mean, 20.0);
    }

    #[test]
    fn cpu_percent_like_docker_stats() {
        assert_eq!(cpu_percent(200, 100, 2000, 1000, 4), 40.0);
        assert_eq!(cpu_percent(100, 100, 2000, 1000, 4), 0.0);
        assert_eq!(cpu_percent(200, 100, 1000, 1000, 4), 0.0);
    }
}
