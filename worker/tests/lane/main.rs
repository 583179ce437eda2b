//! Integration tests of the `prq-worker` binary: each test plays the supervisor for
//! real over a lane socket (see `support`), with real Chromium for sandbox lanes.

mod echo;
mod sandbox;
mod support;
