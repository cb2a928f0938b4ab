//! What the MQTT bridge remembers between runs: the Home Assistant
//! discovery topics it published, so that at the next start it can remove
//! the entities that no longer exist. A facet of its own, so that the
//! bridge writes this list and nothing else of the store.

use super::Store;
use super::error::StoreError;
use super::protocol::Op;

/// The discovery topics published last, kept in the store.
#[derive(Clone)]
pub struct PublishedTopics {
    store: Store,
}

impl PublishedTopics {
    pub(super) fn new(store: Store) -> Self {
        Self { store }
    }

    /// The topics published last, in order.
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        self.store.read(|c| {
            let mut stmt = c.prepare("SELECT topic FROM discovery_topic ORDER BY topic")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Replaces the list with the topics published now.
    pub async fn replace(&self, topics: Vec<String>) -> Result<(), StoreError> {
        self.store.submit(|reply| Op::DiscoveryTopics(topics, reply)).await
    }
}
