//! Pod IPs, from this cluster's loopback pod range.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// Pod IPs: the second address of the pod range onwards, one per running pod.
pub struct IpPool {
    base: u32,
    used: Mutex<BTreeSet<u32>>,
}

impl IpPool {
    pub fn new((a, b): (u8, u8)) -> IpPool {
        IpPool { base: u32::from(Ipv4Addr::new(a, b, 0, 0)), used: Mutex::new(BTreeSet::new()) }
    }

    pub fn take(&self) -> Ipv4Addr {
        let Ok(mut used) = self.used.lock() else { return Ipv4Addr::from(self.base + 2) };
        let n = (2..65_000u32).find(|n| !used.contains(n)).unwrap_or(2);
        used.insert(n);
        Ipv4Addr::from(self.base + n)
    }

    pub fn give(&self, ip: Ipv4Addr) {
        let n = u32::from(ip).wrapping_sub(self.base);
        if let Ok(mut used) = self.used.lock() {
            used.remove(&n);
        }
    }
}
