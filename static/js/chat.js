// Chat: streams an answer over server-sent events (fetch + ReadableStream, so it can POST),
// renders its Markdown safely (markdown-it with HTML off, then DOMPurify), turns [n] markers
// into links to source cards, marks unsupported sentences, and offers stop, regenerate,
// edit-and-resend, copy and feedback.
(function () {
  "use strict";
  const box = document.getElementById("messages");
  const form = document.getElementById("ask-form");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const textarea = form.querySelector("textarea[name=question]");
  const kbPick = form.querySelector(".kb-pick");
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
  const L = box.dataset;
  const MARKER = /\[(\d{1,3}(?:\s*[,，]\s*\d{1,3})*)\]/g;
  const HAS_MARKER = /\[\d{1,3}(?:\s*[,，]\s*\d{1,3})*\]/;
  let controller = null;
  let busy = false;
  let liveCount = 0;
  let conversationId = (form.querySelector("[name=conversation]") || {}).value || null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  // ---- Markdown ---------------------------------------------------------------------
  // html:false: any HTML the model writes is shown as text. Images are off: a model led by
  // a poisoned passage could otherwise leak data through an image URL.
  // Without both libraries (static files not collected?) answers stay plain text.
  const md = window.markdownit && window.DOMPurify
    ? window.markdownit({html: false, linkify: true, breaks: false}) : null;
  if (md) md.disable("image");
  // Table alignment comes out as style="text-align:..", which the CSP forbids: use classes.
  if (md) md.core.ruler.push("align_classes", (state) => {
    for (const token of state.tokens) {
      if (token.type !== "th_open" && token.type !== "td_open") continue;
      const style = token.attrGet("style");
      if (style) {
        token.attrs = token.attrs.filter(([name]) => name !== "style");
        token.attrSet("class", "align-" + style.replace(/^text-align:\s*/, ""));
      }
    }
  });
  const PURIFY = {
    RETURN_DOM_FRAGMENT: true,
    FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe"],
    FORBID_ATTR: ["style", "id", "name"],
  };

  function citeLink(n, msgId) {
    const a = el("a", "cite", "[" + n + "]");
    a.href = "#src-" + msgId + "-" + n;
    a.dataset.n = n;
    return a;
  }

  function linkMarkers(root, msgId) {
    // After sanitising: [n] in text nodes (not in code or links) become citation links.
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
      acceptNode: (node) => (node.parentElement && node.parentElement.closest("pre, code, a")
        ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
    });
    const nodes = [];
    while (walker.nextNode()) if (HAS_MARKER.test(walker.currentNode.data)) nodes.push(walker.currentNode);
    for (const node of nodes) {
      const frag = document.createDocumentFragment();
      let last = 0;
      node.data.replace(MARKER, (match, numbers, offset) => {
        frag.appendChild(document.createTextNode(node.data.slice(last, offset)));
        for (const n of numbers.split(/[,，]/)) frag.appendChild(citeLink(n.trim(), msgId));
        last = offset + match.length;
        return match;
      });
      frag.appendChild(document.createTextNode(node.data.slice(last)));
      node.replaceWith(frag);
    }
  }

  function safeLinks(root) {
    for (const a of root.querySelectorAll("a[href]")) {
      if (a.classList.contains("cite")) continue;
      if (!/^https?:\/\//i.test(a.getAttribute("href"))) {
        a.replaceWith(...a.childNodes); // only http(s) links survive; the text stays
        continue;
      }
      a.target = "_blank";
      a.rel = "noopener noreferrer";
    }
  }

  function codeCopyButtons(root) {
    for (const pre of root.querySelectorAll("pre")) {
      const wrap = el("div", "code-block");
      pre.replaceWith(wrap);
      const copy = el("button", "small secondary code-copy", L.labelCopyCode);
      copy.type = "button";
      copy.addEventListener("click", () => {
        const text = pre.textContent;
        if (navigator.clipboard) navigator.clipboard.writeText(text).then(() => { copy.textContent = L.labelCopied; }, () => {});
      });
      wrap.append(copy, pre);
    }
  }

  function renderMarkdown(target, text, msgId) {
    let frag;
    if (md) frag = DOMPurify.sanitize(md.render(text || ""), PURIFY);
    else { frag = document.createDocumentFragment(); frag.appendChild(el("p", "plain", text || "")); }
    safeLinks(frag);
    linkMarkers(frag, msgId);
    codeCopyButtons(frag);
    for (const table of frag.querySelectorAll("table")) {
      const wrap = el("div", "table-wrap");
      table.replaceWith(wrap);
      wrap.appendChild(table);
    }
    target.replaceChildren(frag);
  }

  function citedInText(text) {
    const out = new Set();
    for (const m of (text || "").matchAll(MARKER)) for (const n of m[1].split(/[,，]/)) out.add(Number(n));
    return out;
  }

  // ---- Unsupported sentences: a mark on the sentence itself -------------------------
  const WORD = /[\p{L}\p{N}]/u;

  function markSentence(root, sentence) {
    // Compare letters and digits only, so markup, spacing and [n] links do not matter.
    const target = Array.from(sentence.replace(MARKER, "")).filter((ch) => WORD.test(ch)).join("").toLowerCase();
    if (!target) return false;
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
      acceptNode: (node) => (node.parentElement.closest("a.cite, pre, .code-copy")
        ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
    });
    let flat = "";
    const map = []; // flat index -> [node, offset]
    while (walker.nextNode()) {
      const node = walker.currentNode;
      for (let i = 0; i < node.data.length; i++) {
        const ch = node.data[i];
        if (WORD.test(ch)) { flat += ch.toLowerCase(); map.push([node, i]); }
      }
    }
    const start = flat.indexOf(target);
    if (start < 0) return false;
    const end = start + target.length - 1;
    const spans = new Map(); // node -> [from, to)
    for (let i = start; i <= end; i++) {
      const [node, offset] = map[i];
      const span = spans.get(node);
      if (span) span[1] = offset + 1; else spans.set(node, [offset, offset + 1]);
    }
    // The sentence's closing punctuation belongs to the mark too.
    const [lastNode] = map[end];
    for (const [node, [from, to]] of spans) {
      let stop = to;
      if (node === lastNode) while (stop < node.data.length && /[.!?。！？;；)）”"']/.test(node.data[stop])) stop++;
      const middle = node.splitText(from);
      middle.splitText(stop - from);
      const mark = el("mark", "unsupported");
      mark.title = L.labelUnverified;
      middle.replaceWith(mark);
      mark.appendChild(middle);
    }
    return true;
  }

  function showUnverified(view, unverified) {
    view.unverified.replaceChildren();
    const missing = (unverified || []).filter((u) => !markSentence(view.answer, u.sentence));
    if (!missing.length) return;
    view.unverified.appendChild(el("span", null, "⚠ " + L.labelUnverifiedNote));
    for (const u of missing) view.unverified.appendChild(el("q", null, u.sentence));
  }

  // ---- Sources: cited first and open, the rest behind "n more" ----------------------
  function sourceCard(s, msgId) {
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
    const text = s.text || "";
    card.appendChild(el("div", "source-text", text.length > 600 ? text.slice(0, 600) + "…" : text));
    if (s.url && s.url.startsWith("/")) {
      const open = el("a", null, L.labelOpen);
      open.href = s.url; open.target = "_blank"; open.rel = "noopener";
      card.appendChild(open);
    }
    return card;
  }

  function renderSources(view, sources, msgId, answerText) {
    const wrap = view.sources;
    wrap.replaceChildren();
    view.sourceList = sources || [];
    if (!sources || !sources.length) return;
    const inText = citedInText(answerText);
    const cited = sources.filter((s) => s.cited === true || inText.has(Number(s.n)));
    const rest = sources.filter((s) => !cited.includes(s));
    view.citedKey = cited.map((s) => s.n).join(",");
    wrap.appendChild(el("div", "muted", L.labelSources));
    if (!cited.length) { // nothing cited (yet): all of them, in the order received
      for (const s of sources) wrap.appendChild(sourceCard(s, msgId));
      return;
    }
    for (const s of cited) wrap.appendChild(sourceCard(s, msgId));
    if (rest.length) {
      const more = el("details", "more-sources");
      more.appendChild(el("summary", null, (rest.length === 1 ? L.labelMoreSource : L.labelMoreSources).replace("{n}", rest.length)));
      for (const s of rest) more.appendChild(sourceCard(s, msgId));
      wrap.appendChild(more);
    }
  }

  box.addEventListener("click", (e) => {
    const cite = e.target.closest("a.cite");
    if (!cite) return;
    e.preventDefault();
    const card = document.getElementById(cite.getAttribute("href").slice(1));
    if (!card) return;
    const details = card.closest("details");
    if (details) details.open = true;
    card.classList.add("flash");
    card.scrollIntoView({block: "nearest"});
    setTimeout(() => card.classList.remove("flash"), 1500);
  });

  // ---- Messages ----------------------------------------------------------------------
  function setBusy(on) {
    busy = on;
    sendButton.disabled = on;
    stopButton.hidden = !on;
    box.classList.toggle("busy", on);
    box.querySelectorAll(".regenerate, .edit").forEach((b) => { b.disabled = on; });
  }

  function addUser(text, id) {
    const m = el("div", "msg user");
    if (id) m.dataset.id = id;
    const bubble = el("div", "bubble", text);
    const edit = el("button", "small link edit", L.labelEdit);
    edit.type = "button";
    edit.disabled = busy;
    edit.addEventListener("click", () => startEdit(m, bubble));
    m.append(bubble, edit);
    box.appendChild(m);
    return m;
  }

  function addAssistant() {
    const m = el("div", "msg assistant");
    const status = el("div", "status muted thinking", L.labelThinking);
    const answer = el("div", "bubble answer md");
    const unverified = el("div", "unverified");
    const sources = el("div", "sources");
    m.append(status, answer, unverified, sources);
    box.appendChild(m);
    liveCount += 1; // ids of source cards must be unique while the message id is unknown
    return {m, status, answer, unverified, sources, text: "", sourceList: [], citedKey: "", key: "live" + liveCount};
  }

  function actions(view, msgId, feedback) {
    const wrap = el("div", "actions");
    const copy = el("button", "small link", L.labelCopy);
    copy.type = "button";
    copy.addEventListener("click", () => {
      if (navigator.clipboard) navigator.clipboard.writeText(view.text).then(() => { copy.textContent = L.labelCopied; }, () => {});
    });
    const again = el("button", "small link regenerate", L.labelRegenerate);
    again.type = "button";
    again.disabled = busy;
    again.addEventListener("click", () => regenerate(view.m));
    wrap.append(copy, again);
    if (!msgId) return wrap; // a stopped answer's id is not known here: no feedback on it
    const thanks = el("span", "muted feedback-note");
    thanks.setAttribute("role", "status");
    for (const [rating, label] of [[1, "👍"], [-1, "👎"]]) {
      const b = el("button", "small link thumb", label);
      b.type = "button";
      b.setAttribute("aria-label", rating > 0 ? L.labelHelpful : L.labelUnhelpful);
      b.title = b.getAttribute("aria-label");
      const chosen = feedback === rating;
      b.classList.toggle("chosen", chosen);
      b.setAttribute("aria-pressed", chosen ? "true" : "false");
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
    wrap.appendChild(thanks);
    const faqKbs = faqKnowledgeBases();
    if (faqKbs.length) {
      const save = el("button", "small link save-faq", L.labelFaq);
      save.type = "button";
      save.addEventListener("click", () => openFaqForm(view, msgId, faqKbs, save));
      wrap.appendChild(save);
    }
    return wrap;
  }

  // ---- Save as FAQ (owners and editors: curation/faq_views.py) -------------------------
  function faqKnowledgeBases() {
    // The conversation's knowledge bases whose FAQ this user writes: [[id, name], ...].
    const writable = (L.faqKbs || "").split(",").filter(Boolean);
    return Array.from(kbPick.querySelectorAll("input[name=kb]:checked"))
      .filter((x) => writable.includes(x.value)).map((x) => [x.value, x.dataset.name]);
  }

  function openFaqForm(view, msgId, kbs, button) {
    if (view.m.querySelector("form.faq-form")) return;
    const f = el("form", "faq-form stacked");
    const asked = view.m.previousElementSibling && view.m.previousElementSibling.classList.contains("user")
      ? view.m.previousElementSibling.querySelector(".bubble").textContent : "";
    const field = (label, input) => { const l = el("label", null, label); l.appendChild(input); f.appendChild(l); };
    const question = el("input"); question.name = "question"; question.required = true; question.maxLength = 1000; question.value = asked;
    const answer = el("textarea"); answer.name = "answer"; answer.required = true; answer.rows = 5; answer.value = view.text;
    field(L.labelFaqQuestion, question);
    field(L.labelFaqAnswer, answer);
    const kb = el("select"); kb.name = "knowledge_base";
    for (const [id, name] of kbs) { const o = el("option", null, name); o.value = id; kb.appendChild(o); }
    if (kbs.length > 1) field(L.labelFaqKb, kb);
    const note = el("p", "muted"); note.setAttribute("role", "status");
    const submit = el("button", "small", L.labelFaqSave); submit.type = "submit";
    const cancel = el("button", "small secondary", L.labelCancel); cancel.type = "button";
    cancel.addEventListener("click", () => f.remove());
    const row = el("p"); row.append(submit, " ", cancel);
    f.append(row, note);
    f.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = new FormData();
      body.append("question", question.value); body.append("answer", answer.value); body.append("knowledge_base", kb.value);
      submit.disabled = true;
      fetch(L.faqUrl.replace("/0/", "/" + msgId + "/"), {method: "POST", body, headers: {"X-CSRFToken": csrf}})
        .then((r) => r.json().then((data) => ({ok: r.ok, data})))
        .then(({ok, data}) => {
          submit.disabled = false;
          if (!ok) { note.textContent = data.error || L.labelError; return; }
          f.remove();
          const saved = el("span", "muted faq-saved", data.message || L.labelFaqSaved);
          saved.setAttribute("role", "status");
          button.replaceWith(saved);
        }, () => { submit.disabled = false; note.textContent = L.labelError; });
    });
    view.m.appendChild(f);
    question.focus();
  }

  function finish(view, data) {
    const id = data.message_id || null;
    view.text = data.answer || "";
    if (id) { view.answer.id = "answer-" + id; view.m.dataset.id = id; }
    view.status.classList.remove("thinking");
    view.m.classList.add(data.mode || "generated");
    if (data.mode === "abstained") view.status.textContent = L.labelAbstained;
    else if (data.mode === "stopped") view.status.textContent = L.labelStopped;
    else if (data.mode === "faq") view.status.textContent = L.labelFaqMode;
    else if (data.mode === "error") view.status.textContent = L.labelError + (data.error ? ": " + data.error : "");
    else view.status.textContent = "";
    const key = id || view.key;
    renderMarkdown(view.answer, view.text, key);
    showUnverified(view, data.unverified);
    renderSources(view, data.sources || view.sourceList, key, view.text);
    view.m.appendChild(actions(view, id, data.feedback));
  }

  // ---- Streaming ----------------------------------------------------------------------
  const parseFrames = window.parseSSEFrames;  // static/js/sse.js

  function conversationStarted(id, title) {
    // The new conversation is listed (and becomes the page's URL) as soon as it exists.
    if (conversationId) return;
    conversationId = String(id);
    const hidden = el("input");
    hidden.type = "hidden"; hidden.name = "conversation"; hidden.value = conversationId;
    form.appendChild(hidden);
    kbPick.disabled = true;
    const url = L.conversationUrl.replace("/0/", "/" + conversationId + "/");
    const list = document.getElementById("conversation-list");
    list.querySelectorAll(".empty-list").forEach((x) => x.remove());
    list.querySelectorAll("li.current").forEach((x) => { x.classList.remove("current"); x.querySelector("a") && x.querySelector("a").removeAttribute("aria-current"); });
    const li = el("li", "current");
    const a = el("a", null, title || "…");
    a.href = url; a.setAttribute("aria-current", "page");
    li.appendChild(a);
    list.prepend(li);
    const count = document.getElementById("conv-count");
    if (count) count.textContent = Number(count.textContent) + 1;
    history.replaceState(null, "", url);
    checkPicker();
  }

  async function ask(question) {
    if (busy || !question) return;
    const data = new FormData(form);
    data.set("question", question);
    const filters = pickedFilters();
    if (filters) data.set("filters", JSON.stringify(filters));
    addUser(question);
    textarea.value = "";
    const view = addAssistant();
    let frame = 0;
    const draw = () => {
      frame = 0;
      // Follow the answer as it grows, unless the reader has scrolled up to read.
      const root = document.documentElement;
      const following = window.innerHeight + window.scrollY >= root.scrollHeight - 120;
      renderMarkdown(view.answer, view.text, view.key);
      if (following) window.scrollTo(0, root.scrollHeight);
      if (citedInText(view.text).size && [...citedInText(view.text)].join(",") !== view.citedKey) {
        renderSources(view, view.sourceList, view.key, view.text);
      }
    };
    controller = new AbortController();
    setBusy(true);
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
          if (type === "status") {
            if (payload.conversation_id) conversationStarted(payload.conversation_id, payload.title);
            // After a restart the models load once per process: say why this one waits.
            if (payload.stage === "warming") view.status.textContent = L.labelWarming;
            else if (payload.stage === "retrieving") view.status.textContent = L.labelThinking;
          } else if (type === "token") {
            view.text += payload.text;
            view.status.textContent = ""; view.status.classList.remove("thinking");
            if (!frame) frame = requestAnimationFrame(draw); // at most one render per frame
          } else if (type === "sources") {
            renderSources(view, payload.sources, view.key, view.text);
          } else if (type === "done") {
            if (frame) { cancelAnimationFrame(frame); frame = 0; }
            finish(view, payload);
          } else if (type === "error") {
            if (frame) { cancelAnimationFrame(frame); frame = 0; }
            finish(view, {message_id: payload.message_id, mode: "error", error: payload.message, answer: view.text, sources: view.sourceList});
          }
        });
      }
    } catch (err) {
      if (frame) { cancelAnimationFrame(frame); frame = 0; }
      if (err.name === "AbortError") {
        // The server keeps what was streamed, with its sources, as a "stopped" answer.
        finish(view, {mode: "stopped", answer: view.text, sources: view.sourceList});
      } else {
        finish(view, {mode: "error", error: err.message, answer: view.text, sources: view.sourceList});
      }
    } finally {
      setBusy(false);
      controller = null;
    }
  }

  // ---- Regenerate, edit and resend ------------------------------------------------------
  async function userMessageId(userEl) {
    // Bubbles added live do not know their id: the k-th question on the page is the k-th
    // user message of the conversation. A stopped answer is saved once the server notices
    // the closed stream: wait for it, or cutting the history now would race with that save.
    const pending = box.querySelectorAll(".msg.assistant:not([data-id])").length;
    if (userEl.dataset.id && !pending) return userEl.dataset.id;
    const onPage = box.querySelectorAll(".msg").length;
    let messages = [];
    for (let attempt = 0; attempt < 20; attempt++) {
      const r = await fetch(L.jsonUrl.replace("/0.json", "/" + conversationId + ".json"));
      if (!r.ok) return null;
      messages = (await r.json()).messages;
      if (messages.length >= onPage) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    if (userEl.dataset.id) return userEl.dataset.id;
    const questions = messages.filter((m) => m.role === "user");
    const index = Array.from(box.querySelectorAll(".msg.user")).indexOf(userEl);
    return questions[index] ? String(questions[index].id) : null;
  }

  async function truncateFrom(userEl) {
    if (busy || !conversationId) return false;
    const id = await userMessageId(userEl);
    if (!id) return false;
    const body = new FormData();
    body.append("message", id);
    const r = await fetch(L.truncateUrl.replace("/0/", "/" + conversationId + "/"), {method: "POST", body, headers: {"X-CSRFToken": csrf}});
    if (!r.ok) return false;
    while (userEl.nextSibling) userEl.nextSibling.remove();
    userEl.remove();
    return (await r.json()).question;
  }

  async function regenerate(assistantEl) {
    let userEl = assistantEl.previousElementSibling;
    while (userEl && !userEl.classList.contains("user")) userEl = userEl.previousElementSibling;
    if (!userEl) return;
    const question = await truncateFrom(userEl);
    if (question) ask(question);
  }

  function startEdit(m, bubble) {
    if (busy || m.querySelector(".editor")) return;
    const editor = el("div", "editor");
    const input = el("textarea");
    input.value = bubble.textContent;
    input.rows = Math.min(8, input.value.split("\n").length + 1);
    input.setAttribute("aria-label", L.labelEdit);
    const save = el("button", "small", L.labelSend);
    save.type = "button";
    const cancel = el("button", "small secondary", L.labelCancel);
    cancel.type = "button";
    const row = el("div", "row");
    row.append(save, cancel);
    editor.append(input, row);
    bubble.hidden = true;
    m.querySelector(".edit").hidden = true;
    m.appendChild(editor);
    input.focus();
    const close = () => { editor.remove(); bubble.hidden = false; m.querySelector(".edit").hidden = false; };
    cancel.addEventListener("click", close);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Escape") close();
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); save.click(); }
    });
    save.addEventListener("click", async () => {
      const text = input.value.trim();
      if (!text || busy) return;
      save.disabled = true;
      if (await truncateFrom(m)) ask(text);
      else save.disabled = false;
    });
  }

  // ---- The composer, the picker, the conversation list -------------------------------------
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    ask(textarea.value.trim());
  });
  stopButton.addEventListener("click", () => controller && controller.abort());
  textarea.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); if (!busy) form.requestSubmit(); }
  });
  document.querySelectorAll("form.confirm").forEach((f) => f.addEventListener("submit", (e) => { if (!confirm(f.dataset.confirm)) e.preventDefault(); }));

  const warning = document.getElementById("kb-warning");
  const several = document.getElementById("kb-several");
  function checkPicker() {
    // A knowledge base without ready documents can only answer "not in your documents".
    const empty = Array.from(kbPick.querySelectorAll("input[name=kb]:checked"))
      .filter((x) => x.dataset.ready === "0").map((x) => x.dataset.name);
    warning.hidden = !empty.length || kbPick.disabled;
    warning.textContent = empty.length ? warning.dataset.template.replace("{names}", empty.join(", ")) : "";
    // Their settings merge by one rule (retrieval.services.settings_for): say which.
    several.hidden = kbPick.querySelectorAll("input[name=kb]:checked").length < 2;
  }
  kbPick.addEventListener("change", checkPicker);
  checkPicker();

  // The filter picker -> the filter language (ingestion.scope): tags any of, meta all of.
  const filterPick = document.getElementById("filter-pick");
  function filterValue(text) {
    const t = text.trim();
    return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : t;
  }
  function pickedFilters() {
    if (!filterPick) return null;
    const tags = Array.from(filterPick.querySelectorAll(".filter-tag:checked"))
      .filter((x) => !x.closest("label").hidden).map((x) => x.value);
    const meta = {};
    for (const line of document.getElementById("filter-meta").value.split("\n")) {
      const m = line.match(/^\s*([A-Za-z0-9_.-]+)\s*(>=|<=|=)\s*(.+?)\s*$/);
      if (!m) continue;
      const [, key, op, raw] = m;
      const spec = typeof meta[key] === "object" && meta[key] !== null && !Array.isArray(meta[key]) ? meta[key] : {};
      if (op === ">=") spec.gte = filterValue(raw);
      else if (op === "<=") spec.lte = filterValue(raw);
      else if (raw.includes("|")) spec.in = raw.split("|").map(filterValue);
      else spec.eq = filterValue(raw);
      meta[key] = spec;
    }
    if (!tags.length && !Object.keys(meta).length) return null;
    return {tags, meta};
  }
  function showTagsOfPicked() {
    if (!filterPick) return;
    const picked = new Set(Array.from(kbPick.querySelectorAll("input[name=kb]:checked")).map((x) => x.value));
    for (const label of filterPick.querySelectorAll("[data-kbs]")) {
      label.hidden = !label.dataset.kbs.split(" ").some((id) => picked.has(id));
    }
  }
  kbPick.addEventListener("change", showTagsOfPicked);
  showTagsOfPicked();

  const toggle = document.getElementById("conv-toggle");
  const aside = document.getElementById("conversations");
  toggle.addEventListener("click", () => {
    const open = aside.classList.toggle("open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  });

  // A continued conversation: show its history.
  if (L.history) {
    fetch(L.history).then((r) => r.json()).then((conv) => {
      for (const m of conv.messages) {
        if (m.role === "user") addUser(m.content, m.id);
        else {
          const view = addAssistant();
          finish(view, {message_id: m.id, mode: m.mode, answer: m.content, sources: m.sources,
            unverified: m.unverified, error: m.error, feedback: m.feedback});
        }
      }
    });
  }
})();
