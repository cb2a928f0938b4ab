//! Home Assistant: the MQTT bridge and the Supervisor client.
//!
//! The bridge publishes what the engine is doing as Home Assistant entities
//! over MQTT discovery and turns Home Assistant's switch and button presses
//! into commands of the engine's control API (with
//! [`CommandSource::Mqtt`](crate::engine::CommandSource::Mqtt)). It reads the
//! engine's status snapshots (a watch channel: the newest state wins, and the
//! engine never waits for the bridge), so a slow or absent broker never
//! slows message traffic.
//!
//! ```no_run
//! # async fn demo(engine: switchboard::engine::Engine, args: switchboard::ha::MqttArgs) -> anyhow::Result<()> {
//! use switchboard::ha::{self, Environment};
//!
//! let settings = ha::resolve(&args, &Environment::from_process(&args))?;
//! let bridge = ha::start(engine.clone(), settings);
//! // ... until a stop is asked for:
//! bridge.refuse_commands();
//! engine.shutdown().await;
//! bridge.shutdown().await; // final states, then `offline`
//! # Ok(()) }
//! ```
//!
//! Layout: [`discovery`] (entities, topics and payloads; pure), [`states`]
//! (state payloads and when to publish them; pure), `bridge` (the task),
//! [`options`] (the add-on's options file), [`settings`] (flags,
//! environment and options file combined) and `supervisor` (the
//! Supervisor's MQTT service).

mod bridge;
pub mod discovery;
pub mod options;
pub mod settings;
pub mod states;
mod supervisor;

pub use bridge::{BridgeHandle, MqttStatus, start};
pub use options::AddonOptions;
pub use settings::{
    Broker, BrokerSource, BrokerTls, Environment, HaSettings, MqttArgs, Secret, options_path, resolve, resolve_with,
};
pub use supervisor::SupervisorError;
