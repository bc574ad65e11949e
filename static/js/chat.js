// Chat: streams an answer over server-sent events (fetch + ReadableStream, so it can POST),
// turns [n] markers into links to source cards, shows unverified sentences and feedback.
(function () {
  "use strict";
  const box = document.getElementById("messages");
  const form = document.getElementById("ask-form");
  const stopButton = document.getElementById("stop");
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
  const L = box.dataset;
  let controller = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function renderAnswer(target, text, msgId) {
    // Text with [n] markers as links to the source cards of this message.
    target.replaceChildren();
    const parts = text.split(/(\[\d{1,3}\])/);
    for (const part of parts) {
      const m = part.match(/^\[(\d{1,3})\]$/);
      if (m) {
        const a = el("a", "cite", part);
        a.href = "#src-" + msgId + "-" + m[1];
        a.addEventListener("click", (e) => {
          e.preventDefault();
          const card = document.getElementById("src-" + msgId + "-" + m[1]);
          if (card) { card.classList.add("flash"); card.scrollIntoView({block: "nearest"}); setTimeout(() => card.classList.remove("flash"), 1500); }
        });
        target.appendChild(a);
      } else {
        target.appendChild(document.createTextNode(part));
      }
    }
  }

  function renderSources(wrap, sources, msgId) {
    wrap.replaceChildren();
    if (!sources || !sources.length) return;
    wrap.appendChild(el("div", "muted", L.labelSources));
    for (const s of sources) {
      const card = el("div", "source-card");
      card.id = "src-" + msgId + "-" + s.n;
      const head = el("div", "source-head");
      head.appendChild(el("strong", null, "[" + s.n + "] " + s.document));
      const where = [];
      if (s.page) where.push(L.labelPage.replace("{n}", s.page));
      if (s.sheet) where.push(s.sheet);
      if (s.heading) where.push(s.heading);
      where.push(L.labelScore + " " + Number(s.score).toFixed(3));
      head.appendChild(el("span", "muted", " · " + where.join(" · ")));
      card.appendChild(head);
      card.appendChild(el("div", "source-text", s.text.length > 600 ? s.text.slice(0, 600) + "…" : s.text));
      const open = el("a", null, L.labelOpen);
      open.href = s.url; open.target = "_blank"; open.rel = "noopener";
      card.appendChild(open);
      wrap.appendChild(card);
    }
  }

  function feedbackButtons(msgId) {
    const wrap = el("div", "actions");
    const copy = el("button", "small link", L.labelCopy);
    copy.type = "button";
    copy.addEventListener("click", () => {
      const text = document.getElementById("answer-" + msgId).textContent;
      navigator.clipboard && navigator.clipboard.writeText(text).then(() => { copy.textContent = L.labelCopied; });
    });
    wrap.appendChild(copy);
    for (const [rating, label] of [[1, "👍"], [-1, "👎"]]) {
      const b = el("button", "small link thumb", label);
      b.type = "button";
      b.setAttribute("aria-label", rating > 0 ? L.labelHelpful : L.labelUnhelpful);
      b.title = b.getAttribute("aria-label");
      b.addEventListener("click", () => {
        const body = new FormData();
        body.append("rating", rating);
        fetch(L.feedbackUrl.replace("/0/", "/" + msgId + "/"), {method: "POST", body, headers: {"X-CSRFToken": csrf}})
          .then((r) => {
            if (!r.ok) return;
            wrap.querySelectorAll(".thumb").forEach((x) => { x.classList.remove("chosen"); x.setAttribute("aria-pressed", "false"); });
            b.classList.add("chosen"); b.setAttribute("aria-pressed", "true");
            thanks.textContent = L.labelThanks;
          });
      });
      wrap.appendChild(b);
    }
    const thanks = el("span", "muted feedback-note");
    thanks.setAttribute("role", "status");
    wrap.appendChild(thanks);
    return wrap;
  }

  function addUser(text) {
    const m = el("div", "msg user");
    m.appendChild(el("div", "bubble", text));
    box.appendChild(m);
  }

  function addAssistant() {
    const m = el("div", "msg assistant");
    const status = el("div", "status muted thinking", L.labelThinking);
    const answer = el("div", "bubble answer");
    const unverified = el("ul", "unverified");
    const sources = el("div", "sources");
    m.append(status, answer, unverified, sources);
    box.appendChild(m);
    return {m, status, answer, unverified, sources};
  }

  function finish(view, data) {
    const id = data.message_id;
    view.answer.id = "answer-" + id;
    view.status.classList.remove("thinking");
    view.status.textContent = data.mode === "abstained" ? L.labelAbstained : "";
    view.m.classList.add(data.mode);
    renderAnswer(view.answer, data.answer, id);
    view.unverified.replaceChildren();
    for (const u of data.unverified || []) {
      view.unverified.appendChild(el("li", null, "⚠ " + L.labelUnverified + ": " + u.sentence));
    }
    renderSources(view.sources, data.sources, id);
    view.m.appendChild(feedbackButtons(id));
  }

  function parseFrames(buffer, onEvent) {
    let index;
    while ((index = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, index);
      buffer = buffer.slice(index + 2);
      let type = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) type = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(type, JSON.parse(data));
    }
    return buffer;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const question = (data.get("question") || "").trim();
    if (!question) return;
    if (form.querySelector(".kb-pick").disabled) {
      // a continued conversation keeps its knowledge bases (sent by the server)
    }
    addUser(question);
    form.querySelector("textarea").value = "";
    const view = addAssistant();
    let text = "";
    controller = new AbortController();
    stopButton.hidden = false;
    try {
      const response = await fetch(form.action, {method: "POST", body: data, signal: controller.signal, headers: {"X-CSRFToken": csrf}});
      if (!response.ok) throw new Error(await response.text());
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer = parseFrames(buffer + decoder.decode(value, {stream: true}), (type, payload) => {
          if (type === "token") { text += payload.text; view.status.textContent = ""; view.status.classList.remove("thinking"); renderAnswer(view.answer, text, "live"); }
          else if (type === "sources") renderSources(view.sources, payload.sources, "live");
          else if (type === "done") {
            finish(view, payload);
            if (!form.querySelector("[name=conversation]")) {
              const hidden = el("input"); hidden.type = "hidden"; hidden.name = "conversation"; hidden.value = payload.conversation_id;
              form.appendChild(hidden);
              form.querySelector(".kb-pick").disabled = true;
              history.replaceState(null, "", "/chat/" + payload.conversation_id + "/");
            }
          } else if (type === "error") { view.status.classList.remove("thinking"); view.status.textContent = L.labelError + ": " + payload.message; view.m.classList.add("error"); }
        });
      }
    } catch (err) {
      view.status.classList.remove("thinking");
      if (err.name !== "AbortError") { view.status.textContent = L.labelError + ": " + err.message; view.m.classList.add("error"); }
      else view.status.textContent = L.labelStopped;
    } finally {
      stopButton.hidden = true;
      controller = null;
    }
  });
  document.querySelectorAll("form.confirm").forEach((f) => f.addEventListener("submit", (e) => { if (!confirm(f.dataset.confirm)) e.preventDefault(); }));
  stopButton.addEventListener("click", () => controller && controller.abort());
  form.querySelector("textarea").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });

  // A continued conversation: show its history.
  if (L.history) {
    fetch(L.history).then((r) => r.json()).then((conv) => {
      for (const m of conv.messages) {
        if (m.role === "user") addUser(m.content);
        else {
          const view = addAssistant();
          if (m.mode === "error") { view.status.textContent = L.labelError + ": " + m.error; view.m.classList.add("error"); }
          finish(view, {message_id: m.id, mode: m.mode, answer: m.content, sources: m.sources, unverified: m.unverified});
        }
      }
    });
  }
})();
