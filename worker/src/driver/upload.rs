//! Attachments through the page's own upload control, as a person attaches them: the
//! files go onto the site's file input with `DOM.setFileInputFiles` (the input a
//! site hides behind its attach button is in the page all the same; a site that adds it
//! only on the button's click gets the click first, and one whose click opens a file
//! chooser from an input it never shows has the chooser intercepted
//! (`Page.setInterceptFileChooserDialog`): its `Page.fileChooserOpened` names the input
//! that takes the files, and no dialog opens), the page uploads them as it does
//! for a person, and the driver waits until the page shows one "uploaded" marker per
//! file, within the lane's upload deadline. The site's own error text, if it shows one,
//! fails the request as `upload_rejected` in its words. A site with no known
//! "uploaded" marker is taken as done when its send button is enabled (what
//! AIStudioProxyAPI waits for on AI Studio), which the driver waits for anyway.
//!
//! What each site's control is (`attach_*` selectors) lives in its module; a site whose
//! control has no public evidence yet takes attachments only once the lane's config
//! names it.

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::dom::{BackendNodeId, SetFileInputFilesParams};
use chromiumoxide::cdp::browser_protocol::page::{
    EventFileChooserOpened, SetInterceptFileChooserDialogParams,
};
use chromiumoxide::cdp::js_protocol::runtime::RemoteObjectId;
use futures::StreamExt;
use prq_protocol::worker::{Attachment, Failure, FailureKind};
use serde_json::json;

use super::failure;
use super::selectors::Attach;
use crate::tab::{PageError, Tab};

/// Puts `files` on the page's file input and waits until the page shows each one as
/// uploaded, for at most `deadline`. `site` names the site in messages.
pub async fn attach(
    tab: &Tab,
    site: &str,
    control: &Attach,
    files: &[Attachment],
    deadline: Duration,
    element_deadline: Duration,
) -> Result<(), Failure> {
    let page = |e: PageError| {
        let Failure { kind, message, .. } = Failure::from(e);
        failure(kind, format!("{site}: {message}"))
    };
    let before: usize = match &control.done {
        Some(done) => tab
            .page_op("done_count", json!({ "done": done }), Duration::ZERO)
            .await
            .map_err(page)?,
        None => 0,
    };
    let input = match tab.element(&control.input).await.map_err(page)? {
        Some(input) => Input::Object(input),
        None => match &control.button {
            Some(button) => through_button(tab, control, button, element_deadline)
                .await
                .map_err(page)?
                .ok_or_else(|| missing(site, &control.input.shown()))?,
            None => return Err(missing(site, &control.input.shown())),
        },
    };
    let paths: Vec<String> = files
        .iter()
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect();
    let set = match input {
        Input::Object(id) => SetFileInputFilesParams::builder()
            .files(paths)
            .object_id(id),
        Input::Node(id) => SetFileInputFilesParams::builder()
            .files(paths)
            .backend_node_id(id),
    }
    .build()
    .map_err(|e| failure(FailureKind::Internal, format!("{site}: {e}")))?;
    tab.call(set).await.map_err(page)?;
    let Some(done) = &control.done else {
        return Ok(());
    };
    let args = json!({
        "done": done,
        "error": control.error,
        "want": before + files.len(),
        "ms": deadline.as_millis() as u64,
    });
    let outcome: String = tab
        .page_op("uploaded", args, deadline)
        .await
        .map_err(page)?;
    if outcome == "ok" {
        return Ok(());
    }
    if let Some(words) = outcome.strip_prefix("refused:") {
        return Err(failure(
            FailureKind::UploadRejected,
            format!("{site} refused an attachment: {words}"),
        ));
    }
    let shown = outcome
        .strip_prefix("timeout:")
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n.saturating_sub(before));
    Err(failure(
        FailureKind::SiteError,
        format!(
            "{site}: {shown} of {} attachments showed as uploaded within {} s ([lanes.attachments] upload_timeout_s; if the page shows them, set attach_done under [lanes.selectors] to what marks one uploaded)",
            files.len(),
            deadline.as_secs_f32()
        ),
    ))
}

/// The file input, as the page gave it.
enum Input {
    /// Found by selector.
    Object(RemoteObjectId),
    /// Named by an intercepted file chooser.
    Node(BackendNodeId),
}

/// Clicks the attach button with file choosers intercepted, and takes whichever comes
/// first: the input appearing in the page, or the chooser it opened. `None`: neither
/// within `deadline`.
async fn through_button(
    tab: &Tab,
    control: &Attach,
    button: &super::selectors::Selector,
    deadline: Duration,
) -> Result<Option<Input>, PageError> {
    let mut opened = tab.listen::<EventFileChooserOpened>().await?;
    tab.call(SetInterceptFileChooserDialogParams::new(true))
        .await?;
    let found = async {
        let ms = deadline.as_millis() as u64;
        let _: String = tab
            .page_op_as_user("click", json!({ "button": button, "ms": ms }), deadline)
            .await?;
        let input = [&control.input];
        tokio::select! {
            Some(chooser) = opened.next() => {
                Ok(chooser.backend_node_id.map(Input::Node))
            }
            shown = tab.wait_for(&input, deadline) => match shown {
                Ok(()) => Ok(tab.element(&control.input).await?.map(Input::Object)),
                Err(PageError::Missing { .. }) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
    .await;
    // Choosers a person opens later (`prq login`) are theirs again.
    tab.call(SetInterceptFileChooserDialogParams::new(false))
        .await?;
    found
}

fn missing(site: &str, selector: &str) -> Failure {
    failure(
        FailureKind::SiteChanged,
        format!("{site}: the page has no file input ({selector}); set attach_input (and attach_button, if a click reveals it) under [lanes.selectors]"),
    )
}
