//! Integration tests of the `prq-worker` binary: each test plays the supervisor for
//! real over a lane socket (see `support`), with real Chromium for browser lanes, on the
//! sandbox site or on replicas of the provider sites (`replica`).

mod accounts;
mod captures;
mod echo;
mod editors;
mod providers;
mod replica;
mod sandbox;
mod support;
