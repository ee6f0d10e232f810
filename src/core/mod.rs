//! The shared heart of lbx: addresses, units, backends, the pool and its selection, health logic,
//! the dialer and the prober, and the serving runtime. No subcommand re-implements any of these.

pub mod addr;
pub mod backend;
pub mod client;
pub mod clock;
mod conn;
pub mod etcd;
pub mod h1;
pub mod health;
pub mod idle;
mod lean;
pub mod local;
pub mod outlier;
pub mod pool;
pub mod prober;
pub mod select;
pub mod server;
pub mod tick;
pub mod tls;
pub mod units;
