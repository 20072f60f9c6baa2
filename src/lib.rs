//! PgGate: a PostgreSQL-protocol proxy that pools backend connections, sends
//! writes to the primary and reads to replicas, and keeps sessions correct
//! while they move between pooled connections.
pub mod auth;
pub mod config;
pub mod health;
pub mod ops;
pub mod protocol;
pub mod server;
pub mod sql;
