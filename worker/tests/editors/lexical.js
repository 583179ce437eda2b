// A Lexical plain-text editor as a replica's prompt box, for prq's tests (bundled with
// esbuild by `tests/lane/editors.rs`): mounted on the page's `#chat-input`, it tells
// replica.js its text (`window.REPLICA_EDITOR`) and sends on Enter, as chat sites do.
import { createEditor, $getRoot, COMMAND_PRIORITY_HIGH, KEY_ENTER_COMMAND } from "lexical";
import { registerPlainText } from "@lexical/plain-text";

const root = document.querySelector("#chat-input");
root.contentEditable = "true";
const editor = createEditor({ namespace: "replica", onError: (e) => { throw e; } });
editor.setRootElement(root);
registerPlainText(editor);
editor.registerUpdateListener(() => root.dispatchEvent(new Event("replica-change")));
editor.registerCommand(
  KEY_ENTER_COMMAND,
  (event) => {
    if (event?.shiftKey) return false;
    event?.preventDefault();
    document.querySelector(window.REPLICA.send).click();
    return true;
  },
  COMMAND_PRIORITY_HIGH,
);
window.REPLICA_EDITOR = {
  text: () => editor.getEditorState().read(() => $getRoot().getTextContent()),
  clear: () => editor.update(() => $getRoot().clear()),
};
