//! `prism`: the operator CLI and the local cloud.

pub mod analyse;
pub mod bench;
pub mod client;
pub mod cloud;
pub mod emulator;
pub mod esm;
pub mod filter;
pub mod http_api;
pub mod install;
pub mod live;
pub mod logs;
pub mod process;
pub mod provision;
pub mod proxy;
pub mod runtime;
pub mod schedules;
pub mod streams;
pub mod template;
pub mod websocket;

pub use client::PrismClient;
pub use cloud::{CloudOptions, LocalCloud, LocalInfo};
pub use emulator::EmulatorChoice;
