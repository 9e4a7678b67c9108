//! What a device does with the fabric today: it runs the transport (so peers get
//! acknowledgements and the `FABRIC_*` counters move) and discards what arrives, until
//! the operations of docs/fabric.md 14.3 consume it (docs/roadmap.md §3).

use std::time::Duration;

use super::transport::Transport;

/// Keeps `t` running for the rest of the process, taking and dropping its deliveries
/// and completions so that its queues never fill.
pub fn spawn_discarding(t: Transport) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("mnic-fabric-sink".into())
        .spawn(move || loop {
            while t.completion_timeout(Duration::ZERO).is_some() {}
            let _ = t.recv_timeout(Duration::from_millis(100));
        })?;
    Ok(())
}
