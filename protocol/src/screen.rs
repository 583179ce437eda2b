//! A person looking at a lane's page: the panel's login view, over the lane socket.
//!
//! The supervisor opens a view with [`ScreenCmd::Open`]; the worker then streams the
//! lane's tab as [`ScreenEvent::Frame`]s (JPEG, scaled to the viewer, at most
//! [`MAX_FPS`] a second) and applies the person's input, until [`ScreenCmd::Close`],
//! after which it checks the page's login again and says `Ready`. Frames go only
//! while a view is open. See DESIGN.md: a person looking at a lane's page goes through
//! the lane's own worker, not through a DevTools port of the browser's.

use serde::{Deserialize, Serialize};

/// Frames a view gets at most per second.
pub const MAX_FPS: u32 = 10;

/// The largest frame a viewer may ask for, per side, in pixels: a 4K screen.
pub const MAX_SIDE: u32 = 3840;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScreenCmd {
    /// Start streaming the tab, each frame scaled to fit `max_width` × `max_height`.
    Open {
        max_width: u32,
        max_height: u32,
    },
    /// A person's input, in the page's CSS pixels.
    Input(ScreenInput),
    /// Load `url`: the worker refuses one that is not of the lane's site.
    Go {
        url: String,
    },
    /// The tab's history, one step back.
    Back,
    Reload,
    /// Stop streaming; the worker checks the page's login again and says `Ready`.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MouseKind {
    Move,
    Down,
    Up,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MouseButton {
    None,
    Left,
    Middle,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Down,
    Up,
}

/// One input event, as the panel's view sends it (JSON: `{"text": {"text": "…"}}`,
/// externally tagged, as the lane socket's bincode needs too) and the
/// worker dispatches it (`Input.dispatchMouseEvent`, `Input.dispatchKeyEvent`,
/// `Input.insertText`). `modifiers` is CDP's bit field: Alt 1, Ctrl 2, Meta 4, Shift 8.
/// Its `Debug` names the kind of event only: what a person types is no log's business.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScreenInput {
    Mouse {
        kind: MouseKind,
        x: f64,
        y: f64,
        #[serde(default = "no_button")]
        button: MouseButton,
        #[serde(default)]
        clicks: u32,
        #[serde(default)]
        modifiers: u32,
    },
    Wheel {
        x: f64,
        y: f64,
        dx: f64,
        dy: f64,
    },
    /// A key that is not text (Enter, Tab, arrows, Backspace, shortcuts): `key` and
    /// `code` as the DOM's `KeyboardEvent` names them.
    Key {
        kind: KeyKind,
        key: String,
        code: String,
        #[serde(default)]
        key_code: u32,
        #[serde(default)]
        modifiers: u32,
    },
    /// Typed or composed (IME) text, inserted as one input.
    Text {
        text: String,
    },
}

fn no_button() -> MouseButton {
    MouseButton::None
}

/// Its `Debug` leaves the image and the URL out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum ScreenEvent {
    /// What the tab shows now. `page_width` × `page_height` is the page's viewport in
    /// CSS pixels (what input coordinates are in); the image is scaled from it.
    Frame {
        jpeg: Vec<u8>,
        page_width: f64,
        page_height: f64,
        url: String,
    },
    /// Something the person asked for was not done (a URL of another site, a
    /// navigation that failed), and why.
    Refused { message: String },
}

impl std::fmt::Debug for ScreenInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScreenInput::Mouse { .. } => "Mouse",
            ScreenInput::Wheel { .. } => "Wheel",
            ScreenInput::Key { .. } => "Key",
            ScreenInput::Text { .. } => "Text",
        })
    }
}

impl std::fmt::Debug for ScreenEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScreenEvent::Frame { jpeg, .. } => write!(f, "Frame({} bytes)", jpeg.len()),
            ScreenEvent::Refused { message } => write!(f, "Refused({message:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_reads_from_the_panels_json_and_its_debug_shows_no_text() {
        let typed: ScreenInput = serde_json::from_str(r#"{"text":{"text":"hunter2"}}"#).unwrap();
        assert_eq!(
            typed,
            ScreenInput::Text {
                text: "hunter2".into()
            }
        );
        assert_eq!(format!("{:?}", ScreenCmd::Input(typed)), "Input(Text)");
        let click: ScreenInput = serde_json::from_str(
            r#"{"mouse":{"kind":"down","x":3.5,"y":4,"button":"left","clicks":1}}"#,
        )
        .unwrap();
        assert!(matches!(
            click,
            ScreenInput::Mouse {
                kind: MouseKind::Down,
                button: MouseButton::Left,
                clicks: 1,
                ..
            }
        ));
        let key: ScreenInput = serde_json::from_str(
            r#"{"key":{"kind":"down","key":"Enter","code":"Enter","key_code":13}}"#,
        )
        .unwrap();
        assert_eq!(format!("{key:?}"), "Key");
        let frame = ScreenEvent::Frame {
            jpeg: vec![0; 9],
            page_width: 1.0,
            page_height: 1.0,
            url: "https://x/?t=secret".into(),
        };
        assert_eq!(format!("{frame:?}"), "Frame(9 bytes)");
        // And they cross the lane socket's codec.
        let cmd = ScreenCmd::Input(key);
        let bytes = bincode::serde::encode_to_vec(&cmd, bincode::config::standard()).unwrap();
        let (back, _): (ScreenCmd, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, cmd);
    }
}
