//! Berth's shared vocabulary, with no server, database or network in it:
//!
//! - [`oci`]: digests, repository names, tags, references, manifests, byte ranges, the
//!   distribution API's routes and conditional requests, each parsed once into a type that cannot
//!   hold an invalid value;
//! - [`auth`]: Basic credentials, token scopes, the tokens Berth signs, upstreams' challenges;
//! - [`config`]: `berth`'s configuration, which `berth serve` parses and `berth-operator` renders
//!   from the same types;
//! - [`glob`]: the repository patterns of access rules, upstream filters and (later) retention;
//! - [`keys`]: key material Berth generates;
//! - [`net`]: trusted proxies, the client behind `X-Forwarded-For`, external URLs;
//! - [`nodemirror`]: the plan a node-mirror pod turns into containerd and CRI-O files;
//! - [`ports`]: loopback ports for the servers tests and benchmarks start;
//! - [`text`]: quoted text cut to what a message can carry.

pub mod auth;
pub mod config;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod glob;
pub mod keys;
pub mod net;
pub mod nodemirror;
pub mod oci;
pub mod ports;
pub mod text;
