//! The local cloud: emulators, Lambda's Runtime API, event-source mappings,
//! schedules, per-function endpoints and API gateways wired from template.yaml;
//! and the client the CLI and the end-to-end tests talk to Prism with.

pub mod backoff;
pub mod client;
pub mod cloud;
pub mod cpu;
pub mod dashboard;
pub mod emulator;
pub mod esm;
pub mod filter;
pub mod function_url;
pub mod http_api;
pub mod iam;
pub mod images;
pub mod install;
pub mod live;
pub mod load;
pub mod logs;
pub mod mappings;
pub mod presigned;
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
