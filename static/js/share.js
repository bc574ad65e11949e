// Share links: the public chat (full page and widget). Streams answers over server-sent
// events like the app's chat (fetch + ReadableStream so it can POST) and shows them as plain
// text with their sources; a 429 shows the server's message.
(function () {
  "use strict";
  const form = document.getElementById("share-form");
  if (!form) return; // a login-required link for a visitor who is not logged in
  const box = document.getElementById("share-messages");
  const errorBox = document.getElementById("share-error");
  const textarea = form.querySelector("textarea[name=question]");
  const send = document.getElementById("share-send");
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]");
  const L = box.dataset;
  let conversationId = null;
  let busy = false;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function bubble(role) {
    const msg = el("div", "msg " + role);
    const b = el("div", "bubble");
    msg.appendChild(b);
    box.appendChild(msg);
    box.scrollTop = box.scrollHeight;
    return {msg, bubble: b};
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function renderSources(view, sources) {
    if (view.sources) view.sources.remove();
    if (!sources || !sources.length) return;
    const details = el("details", "sources");
    details.appendChild(el("summary", null, L.labelSources + " (" + sources.length + ")"));
    const list = el("ol");
    for (const s of sources) {
      const li = el("li");
      let where = s.document || "";
      if (s.page) where += ", " + L.labelPage + " " + s.page;
      li.appendChild(el("strong", null, "[" + s.n + "] " + where));
      li.appendChild(el("div", "muted", (s.text || "").slice(0, 600)));
      list.appendChild(li);
    }
    details.appendChild(list);
    view.msg.appendChild(details);
    view.sources = details;
  }

  // 👍/👎 under an answer: sent with the page's visitor token, like a question.
  function addFeedback(view, messageId) {
    const bar = el("div", "share-feedback");
    const thanks = el("span", "muted share-feedback-thanks", "");
    for (const [rating, symbol, label] of [["1", "👍", L.labelHelpful], ["-1", "👎", L.labelNotHelpful]]) {
      const button = el("button", "secondary small", symbol);
      button.type = "button";
      button.dataset.rating = rating;
      button.setAttribute("aria-label", label);
      button.setAttribute("aria-pressed", "false");
      button.title = label;
      button.addEventListener("click", async () => {
        const data = new FormData();
        data.set("visitor", form.querySelector("[name=visitor]").value);
        data.set("message", messageId);
        data.set("rating", rating);
        const headers = csrf ? {"X-CSRFToken": csrf.value} : {};
        try {
          const response = await fetch(L.feedbackUrl, {method: "POST", body: data, headers, credentials: "same-origin"});
          if (!response.ok) { showError(await failure(response)); return; }
          for (const b of bar.querySelectorAll("button")) {
            b.setAttribute("aria-pressed", String(b === button));
          }
          thanks.textContent = L.labelThanks;
        } catch (err) {
          showError(L.labelError);
        }
      });
      bar.appendChild(button);
    }
    bar.appendChild(thanks);
    view.msg.appendChild(bar);
  }

  const parseFrames = window.parseSSEFrames;  // static/js/sse.js

  async function failure(response) {
    try {
      const body = await response.clone().json();
      if (body && body.error) return body.error;
    } catch (e) { /* not JSON */ }
    const text = (await response.text()).trim();
    return text && text.length < 300 ? text : L.labelError;
  }

  async function ask(question) {
    if (busy || !question) return;
    busy = true; send.disabled = true; showError("");
    const data = new FormData(form);
    data.set("question", question);
    if (conversationId) data.set("conversation", conversationId);
    textarea.value = "";
    bubble("user").bubble.textContent = question;
    const view = bubble("assistant");
    view.msg.classList.add("pending");
    const status = el("div", "status", L.labelThinking);
    view.msg.appendChild(status);
    let text = "";
    try {
      const headers = csrf ? {"X-CSRFToken": csrf.value} : {};
      const response = await fetch(form.action, {method: "POST", body: data, headers, credentials: "same-origin"});
      if (!response.ok) {
        view.msg.remove();
        showError(await failure(response));
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer = parseFrames(buffer + decoder.decode(value, {stream: true}), (type, payload) => {
          if (type === "status") {
            if (payload.conversation_id) conversationId = String(payload.conversation_id);
          } else if (type === "token") {
            text += payload.text;
            view.bubble.textContent = text;
          } else if (type === "sources") {
            renderSources(view, payload.sources);
          } else if (type === "done") {
            view.bubble.textContent = payload.answer;
            view.msg.classList.add(payload.mode);
            view.msg.dataset.mode = payload.mode;
            renderSources(view, payload.sources);
            if (payload.message_id && L.feedbackUrl) addFeedback(view, String(payload.message_id));
          } else if (type === "error") {
            view.msg.classList.add("error");
            view.msg.dataset.mode = "error";
            if (!text) view.bubble.textContent = L.labelError;
          }
        });
      }
    } catch (err) {
      view.msg.classList.add("error");
      view.bubble.textContent = view.bubble.textContent || L.labelError;
    } finally {
      status.remove();
      view.msg.classList.remove("pending");
      box.scrollTop = box.scrollHeight;
      busy = false; send.disabled = false;
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    ask(textarea.value.trim());
  });
  textarea.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      ask(textarea.value.trim());
    }
  });
  for (const button of document.querySelectorAll("#share-suggestions .suggestion")) {
    button.addEventListener("click", () => ask(button.textContent.trim()));
  }
})();
