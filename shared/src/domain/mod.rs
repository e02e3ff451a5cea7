//! The domain: what a job is and how it changes, and the messages about it.
//! Plain data and rules; nothing here knows of AWS.

pub mod breakers;
pub mod commands;
pub mod dead_letters;
pub mod envelope;
pub mod estimates;
pub mod job;
pub mod joblog;
pub mod lanes;
pub mod limits;
pub mod phases;
pub mod quotas;
pub mod results;
pub mod schedule;
pub mod uri;
pub mod workflow;
