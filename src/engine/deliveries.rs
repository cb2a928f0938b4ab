//! The thread the operations run on.
//!
//! An operation delivers one message at a time and waits for each reply
//! (unless it sends ahead, see `pipeline_depth`), so its throughput is one
//! round trip per message. On the engine's main
//! runtime, a reply that has arrived waits for a worker behind every
//! service connection that is ready at the same moment; under load that
//! wait, not the network, set the pace of every delivery. On a thread of
//! their own, the operations are scheduled by the operating system next to
//! the services instead of behind them.

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Owns the thread; dropping it lets the thread end, which drops whatever
/// still runs on it (the engine stops its operations before that).
pub(crate) struct DeliveryThread {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl DeliveryThread {
    pub(crate) fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new().name("deliveries".into()).spawn(move || {
            // Returns when the sender is dropped; the runtime is dropped
            // here, outside any asynchronous context.
            let _ = runtime.block_on(stopped);
        })?;
        Ok(Self { handle, _stop: stop })
    }

    /// Where to spawn an operation's task.
    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
    }
}
