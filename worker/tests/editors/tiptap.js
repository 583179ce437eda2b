// A TipTap editor (ProseMirror, with the starter kit) as a replica's prompt box, for
// prq's tests (bundled with esbuild by `tests/lane/editors.rs`): mounted inside the
// page's `#chat-input`, as Open WebUI's RichTextInput is, it tells replica.js its text
// (`window.REPLICA_EDITOR`, one line per paragraph) and sends on Enter.
import { Editor, Extension } from "@tiptap/core";
import StarterKit from "@tiptap/starter-kit";

const element = document.querySelector("#chat-input");
const send = () => document.querySelector(window.REPLICA.send).click();
const SendOnEnter = Extension.create({
  name: "sendOnEnter",
  addKeyboardShortcuts: () => ({ Enter: () => (send(), true) }),
});
const editor = new Editor({
  element,
  extensions: [StarterKit, SendOnEnter],
  onUpdate: () => element.dispatchEvent(new Event("replica-change")),
});
window.REPLICA_EDITOR = {
  text: () => editor.getText({ blockSeparator: "\n" }),
  clear: () => editor.commands.clearContent(true),
};
