//! Shared test support: the sans-IO simulator and the real-process harness.
#![allow(dead_code)]

pub mod client;
pub mod dns;
pub mod load;
pub mod media;
pub mod netns;
pub mod server;
pub mod sim;
