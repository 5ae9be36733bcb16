//! State in a Redis Cluster: every process of a pipeline shares it, any worker can serve any
//! key. See `docs/redis.md` for the layout and the protocol.
//!
//! - `slot`: hash slots of keys.
//! - `cluster`: a client that sends each flush as one pipeline per node and handles
//!   redirections and failures.
//! - `layout`: key names (one hash tag per entity key) and log entries.
//! - `scripts`: the server-side read and conditional-append scripts.
//! - `links`: the relation features' link sets.
//! - `backend`: the [`crate::StateBackend`] on top of them.

pub(crate) mod backend;
pub(crate) mod cluster;
pub(crate) mod layout;
pub(crate) mod links;
pub(crate) mod scripts;
pub(crate) mod slot;

pub use backend::{RedisBackend, RedisOptions};
pub use cluster::{Cluster, ClusterOptions, Request, Traffic};
pub use links::RedisLinks;
pub use slot::slot_of;
