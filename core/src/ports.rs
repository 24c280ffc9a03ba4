//! Loopback ports for the servers that tests and benchmarks start as processes (etcd, the API
//! server, MinIO, PostgreSQL, Distribution, `berth` itself).
//!
//! A port the kernel hands out for `bind(127.0.0.1:0)` is free only until it is released: any
//! outgoing connection on the machine (and a test run makes thousands) may take it as its local
//! port before the server meant to listen there binds it, and that server then exits with
//! "address already in use" — or a test talks to whatever took it. Ports are therefore drawn at
//! random below the kernel's ephemeral range, which outgoing connections never use, and checked by
//! binding them. Servers Berth runs in production are given their ports by configuration; nothing
//! on a request's path calls this.

use std::net::TcpListener;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the kernel's ephemeral range cannot be read, or leaves no room below it.
const FALLBACK: Range<u16> = 20_000..32_768;
/// The lowest port drawn: well above the well-known and registered ports services default to.
const LOWEST: u16 = 20_000;
const DRAWS: usize = 200;

/// A loopback port that is free now and outside the range outgoing connections take theirs from.
pub fn free_port() -> std::io::Result<u16> {
    let range = below_ephemeral(std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok());
    let span = u64::from(range.end - range.start);
    for _ in 0..DRAWS {
        let port = range.start + u16::try_from(next_random() % span).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // A crowded range: the kernel's own choice is still right far more often than not.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The ports below the ephemeral range that `ip_local_port_range` (`"32768\t60999"`) describes.
fn below_ephemeral(ip_local_port_range: Option<String>) -> Range<u16> {
    let low = ip_local_port_range
        .as_deref()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<u16>().ok());
    match low {
        Some(low) if low >= LOWEST + 1_000 => LOWEST..low,
        _ => FALLBACK,
    }
}

/// splitmix64 over a counter seeded from the clock and the process id: concurrent test processes
/// draw different sequences.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut state = STATE.load(Ordering::Relaxed);
    if state == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        state = nanos ^ (u64::from(std::process::id()) << 32);
        let _ = STATE.compare_exchange(0, state, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut z = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range() {
        assert_eq!(below_ephemeral(Some("32768\t60999\n".into())), 20_000..32_768);
        assert_eq!(below_ephemeral(Some("40000 60999".into())), 20_000..40_000);
        // No room below, or nothing readable: the fixed range.
        assert_eq!(below_ephemeral(Some("1024\t65535".into())), FALLBACK);
        assert_eq!(below_ephemeral(Some("junk".into())), FALLBACK);
        assert_eq!(below_ephemeral(None), FALLBACK);
    }

    #[test]
    fn a_drawn_port_is_free_and_below_the_ephemeral_range() {
        let range = below_ephemeral(std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok());
        for _ in 0..20 {
            let port = free_port().unwrap();
            assert!(range.contains(&port), "{port} outside {range:?}");
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
