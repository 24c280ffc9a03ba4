//! Loopback address ranges for one control plane.
//!
//! Every cluster on this machine shares the host's network, so each takes its own Service range
//! (`127.<96+n>.0.0/16`, whose first address is the `kubernetes` Service) and pod range
//! (`127.<160+n>.0.0/16`), for n in 0..64, held by a lock file while the cluster lives. A lock
//! whose owner process is gone is taken over.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub const SLOTS: u8 = 64;

#[derive(Debug)]
pub struct NetworkLease {
    pub index: u8,
    lock: PathBuf,
}

impl NetworkLease {
    pub fn acquire() -> anyhow::Result<NetworkLease> {
        let dir = std::env::temp_dir();
        for index in 0..SLOTS {
            let lock = dir.join(format!("berth-e2e-network-{index}.lock"));
            if let Ok(owner) = std::fs::read_to_string(&lock) {
                let alive = owner
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
                if alive {
                    continue;
                }
                let _ = std::fs::remove_file(&lock);
            }
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
                let _ = write!(f, "{}", std::process::id());
                return Ok(NetworkLease { index, lock });
            }
        }
        anyhow::bail!("all {SLOTS} e2e network slots are in use")
    }

    pub fn service_cidr(&self) -> String {
        format!("127.{}.0.0/16", 96 + self.index)
    }

    /// The `kubernetes` Service's ClusterIP: the first address of the Service range.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, 96 + self.index, 0, 1)
    }

    pub fn pod_cidr(&self) -> String {
        format!("127.{}.0.0/16", 160 + self.index)
    }
}

impl Drop for NetworkLease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}
