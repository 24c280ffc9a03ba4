//! Loopback ports for the servers a run starts.

/// A port free on loopback right now, outside the range other sockets take theirs from.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(berth_core::ports::free_port()?)
}
