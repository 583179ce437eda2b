//! A request's page controls, decided from what a client can send: the model ID's site
//! model and `-search` suffix (`router.rs` reads the ID), the macros in the last user
//! message ([`macros`]), and the request's sampling parameters. What each site's picker
//! offers, as far as public sources show it, is in [`models`]. The worker's driver
//! applies the result in the page (`worker/src/driver/controls.rs`).

pub mod macros;
pub mod models;

use prq_protocol::controls::{PageControls, Settings};
use prq_protocol::worker::{ChatMessage, Thinking};

use crate::router::Routed;

/// The page controls and thinking setting of one request: the model ID's, with the
/// last user message's macros over them (the macros are taken out of the message).
pub fn decide(
    routed: &Routed<'_>,
    messages: &mut [ChatMessage],
    settings: Settings,
) -> (Thinking, PageControls) {
    let said = macros::take(messages);
    let thinking = match said.think {
        Some(true) => Thinking::On,
        Some(false) => Thinking::Off,
        None => routed.thinking,
    };
    let controls = PageControls {
        model: routed.model.map(str::to_owned),
        search: said.search.unwrap_or(routed.search),
        settings,
    };
    (thinking, controls)
}
