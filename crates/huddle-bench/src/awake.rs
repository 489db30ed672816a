//! CPUs kept out of deep idle while measuring latency.
//!
//! On these VMs an idle vCPU halts, and waking it for a packet is a trip through the hypervisor
//! that costs more than any relay's own work. A PM QoS request of 0 µs (`/dev/cpu_dma_latency`,
//! held while the file stays open) keeps idle CPUs polling instead — what `tuned`'s
//! `latency-performance` profile does on hosts tuned for latency. The latency benchmarks report
//! both: as the machine comes, and with CPUs kept awake.

use std::fs::OpenOptions;
use std::io::Write;

/// Holds the 0 µs PM QoS request until dropped.
pub struct AwakeCpus {
    /// The request lasts while this file is open.
    _request: std::fs::File,
}

impl AwakeCpus {
    /// `None` when the request cannot be made (not root, no PM QoS in this kernel).
    pub fn hold() -> Option<Self> {
        let mut file = OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .ok()?;
        file.write_all(&0i32.to_ne_bytes()).ok()?;
        Some(Self { _request: file })
    }
}
