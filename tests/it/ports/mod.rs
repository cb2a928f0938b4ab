//! Ports for the listeners the tests start, taken below the kernel's
//! ephemeral range.
//!
//! A port found by binding port 0 comes from the ephemeral range (32768 to
//! 60999 on Linux), the range outgoing connections take their local ports
//! from: between the check and the bind that uses the port, a connection
//! made by a test running in parallel can take it. Ports below that range
//! are only taken by an explicit bind, and a counter keeps the tests from
//! being handed the same port twice.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The ports handed out: 20000 to 31999.
const FIRST: u32 = 20_000;
const COUNT: u32 = 12_000;

/// A port on 127.0.0.1 that no other test has been given and that was free
/// a moment ago.
pub(crate) fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test processes run side by side (another checkout's, say) start in
    // different places.
    let start = std::process::id() % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + n) % COUNT).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT - 1);
}

/// `N` different free ports.
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    std::array::from_fn(|_| free_port())
}
