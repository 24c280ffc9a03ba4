//! Ports for the control plane's components: free ones drawn as `berth_core::ports` draws them
//! (below the ephemeral range, where the suite's outgoing connections cannot take them), or given
//! ones first, which a test uses to hand out a taken port. A component that loses its port anyway
//! is started again (see `cluster.rs`).

use std::collections::VecDeque;

use berth_core::ports::free_port;

/// Hands out ports to listen on: first any given ones (tests use that to hand out a taken port),
/// then free ports drawn at random below the ephemeral range.
#[derive(Debug, Default, Clone)]
pub struct Picker {
    first: VecDeque<u16>,
}

impl Picker {
    /// A picker that hands out `ports` before drawing free ones, whether or not they are free.
    pub fn starting_with(ports: impl IntoIterator<Item = u16>) -> Picker {
        Picker { first: ports.into_iter().collect() }
    }

    pub fn port(&mut self) -> anyhow::Result<u16> {
        match self.first.pop_front() {
            Some(port) => Ok(port),
            None => Ok(free_port()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_ports_come_first_then_free_ones() {
        let mut picker = Picker::starting_with([1, 2]);
        assert_eq!(picker.port().unwrap(), 1);
        assert_eq!(picker.port().unwrap(), 2);
        assert!(picker.port().unwrap() > 2);
    }
}
