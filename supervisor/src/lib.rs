//! prq's supervisor: the daemon, its CLI client, the HTTP API, the queue, the lanes,
//! and the sandbox chat site. `main.rs` is only argument parsing; everything else is
//! here so the integration tests can reach the same code.

pub mod accept;
pub mod api;
pub mod attachments;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod controls;
pub mod daemon;
pub mod doctor;
pub mod home;
pub mod http;
pub mod lanes;
pub mod login;
pub mod logs;
pub mod memory;
pub mod metrics;
pub mod openai;
pub mod panel;
pub mod presence;
pub mod procinfo;
pub mod queue;
pub mod ready;
pub mod relay;
pub mod reload;
pub mod remote_login;
pub mod replay;
pub mod router;
pub mod runtime;
pub mod sandbox;
pub mod tools;
