//! State in a Redis Cluster: every process of a pipeline shares it, any worker can serve any
//! key. See `docs/redis.md` for the layout and the protocol.
//!
//! - [`slot`]: hash slots of keys.
//! - [`cluster`]: a client that sends each flush as one pipeline per node and handles
//!   redirections and failures.
//! - [`layout`]: key names (one hash tag per entity key) and log entries.
//! - [`scripts`]: the server-side read and conditional-append scripts.
//! - [`backend`]: the [`crate::StateBackend`] on top of them.

pub mod backend;
pub mod cluster;
pub mod layout;
pub mod scripts;
pub mod slot;

pub use backend::{RedisBackend, RedisOptions};
pub use cluster::{ClusterOptions, Traffic};
