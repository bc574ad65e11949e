// Share links: the script another site includes (<script src=".../s/<token>/embed.js">).
// It adds a chat bubble in the corner that opens the link's widget in an iframe. Styles are
// set through the DOM (no inline <style>), so a strict policy on the host page allows it.
// data-open="true" on the script tag opens the chat at once.
(function () {
  "use strict";
  const script = document.currentScript;
  if (!script || !script.src) return;
  const widgetUrl = script.src.replace(/embed\.js(\?.*)?$/, "widget");
  const startOpen = script.dataset.open === "true";

  function style(node, rules) {
    for (const [key, value] of Object.entries(rules)) node.style.setProperty(key, value);
  }

  function mount() {
    const root = document.createElement("div");
    root.className = "rag-share-widget";
    style(root, {position: "fixed", right: "16px", bottom: "16px", "z-index": "2147483000",
      display: "flex", "flex-direction": "column", "align-items": "flex-end", gap: "8px"});
    const frame = document.createElement("iframe");
    frame.title = script.dataset.title || "Chat";
    style(frame, {width: "min(380px, calc(100vw - 32px))", height: "min(560px, calc(100vh - 96px))",
      border: "1px solid #d0d5dd", "border-radius": "12px", background: "#fff",
      "box-shadow": "0 8px 24px rgba(16,24,40,.18)", display: "none"});
    const button = document.createElement("button");
    button.type = "button";
    button.className = "rag-share-bubble";
    button.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-label", script.dataset.label || "Chat");
    button.textContent = "💬";
    style(button, {width: "56px", height: "56px", "border-radius": "50%", border: "0",
      background: script.dataset.color || "#1d4ed8", color: "#fff", "font-size": "26px",
      cursor: "pointer", "box-shadow": "0 4px 12px rgba(16,24,40,.25)"});
    function toggle(open) {
      if (open && !frame.src) frame.src = widgetUrl; // load on first open only
      frame.style.display = open ? "block" : "none";
      button.setAttribute("aria-expanded", String(open));
    }
    button.addEventListener("click", () => toggle(frame.style.display === "none"));
    root.appendChild(frame);
    root.appendChild(button);
    document.body.appendChild(root);
    if (startOpen) toggle(true);
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
