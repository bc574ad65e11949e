// Upload portal: drag and drop / picker uploads, and live document status by polling.
(function () {
  "use strict";
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]");
  let table = document.getElementById("documents");
  const feedback = document.getElementById("upload-feedback");

  function say(text, cls) {
    if (!feedback) return;
    const li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    feedback.prepend(li);
  }

  function post(url) {
    return fetch(url, {method: "POST", headers: {"X-CSRFToken": csrf ? csrf.value : "", "X-Requested-With": "XMLHttpRequest"}});
  }

  const form = document.getElementById("upload-form");
  if (form) {
    const input = document.getElementById("file-input");
    const zone = document.getElementById("dropzone");
    const upload = (files) => {
      if (!files.length) return;
      // The form's other fields (tags, metadata, ...) go with every upload.
      const data = new FormData(form);
      data.delete("files");
      for (const f of files) data.append("files", f);
      say((form.dataset.labelUploading || "…") + " " + files.length, "info");
      fetch(form.action, {method: "POST", body: data, headers: {"X-Requested-With": "XMLHttpRequest", "Accept": "application/json"}})
        .then((r) => r.json())
        .then((body) => {
          for (const a of body.accepted) say("✓ " + a.name, "success");
          for (const r of body.refused) say("✗ " + r.error, "error");
          reloadList();
        })
        .catch((e) => say("✗ " + e, "error"));
      input.value = "";
    };
    input.addEventListener("change", () => upload(input.files));
    ["dragenter", "dragover"].forEach((ev) => zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("over"); }));
    ["dragleave", "drop"].forEach((ev) => zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.remove("over"); }));
    zone.addEventListener("drop", (e) => upload(e.dataTransfer.files));
    zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  }

  function fill(template, values) {
    return (template || "").replace(/\{(\w+)\}/g, (m, k) => (k in values ? values[k] : m));
  }

  function duration(seconds) {
    const ds = table.dataset;
    if (seconds < 60) return ds.labelUnderMinute;
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return fill(ds.labelMinutes, {n: minutes});
    return fill(ds.labelHours, {h: Math.floor(minutes / 60), m: minutes % 60});
  }

  // "Queued — #3 in line, about 2 min" while it waits; the stage's percent while it runs.
  function detail(d) {
    if (d.status === "ready" || d.status === "failed") return "";
    if (d.status === "queued" && d.queue_position) {
      let text = " — " + fill(table.dataset.labelInLine, {n: d.queue_position});
      if (d.eta_seconds != null) text += ", " + fill(table.dataset.labelAbout, {time: duration(d.eta_seconds)});
      return text;
    }
    return " " + d.progress + "%";
  }

  // The status cell as the poll reports it: the review state of a contribution not
  // approved yet, else the stage with its detail and a progress bar while it runs.
  function statusCell(td, d) {
    const badge = document.createElement("span");
    badge.className = "badge " + d.status;
    const reviewed = !d.review_status || d.review_status === "approved";
    if (reviewed) badge.textContent = d.status_label + detail(d);
    else {
      badge.className = "badge review-" + d.review_status;
      badge.textContent = d.review_label + (d.review_reason ? ": " + d.review_reason : "");
    }
    td.replaceChildren(badge);
    if (reviewed && d.status !== "ready" && d.status !== "failed") {
      const bar = document.createElement("progress");
      bar.max = 100; bar.value = d.progress;
      td.appendChild(bar);
    }
    if (d.error) {
      const err = document.createElement("div");
      err.className = "error";
      err.textContent = d.error;
      td.appendChild(err);
    }
  }

  function nameCell(td, d) {
    if (d.view_url || (d.status === "ready" && !d.faq)) {
      const link = document.createElement("a");
      // The FAQ document links to the FAQ page (d.view_url), where its entries are edited.
      link.href = d.view_url || table.dataset.viewUrl.replace("/0/", "/" + d.id + "/");
      link.textContent = d.name;
      td.replaceChildren(link);
    } else td.textContent = d.name;
  }

  // The rows are rendered by the server, a page at a time; the poll updates them in place
  // (checked boxes stay checked) and asks only about the rows on this page.
  function update(tr, d) {
    tr.dataset.status = d.status;
    tr.dataset.manualEdits = d.manual_edits || 0;
    const cell = (cls) => tr.querySelector("td." + cls);
    if (cell("doc-name")) nameCell(cell("doc-name"), d);
    if (cell("doc-status")) statusCell(cell("doc-status"), d);
    if (cell("doc-pages")) cell("doc-pages").textContent = d.pages == null ? "" : d.pages;
    if (cell("doc-chunks")) cell("doc-chunks").textContent = d.chunks;
    const retry = tr.querySelector("[data-action=retry]");
    if (retry) retry.hidden = !(!d.review_status || d.review_status === "approved");
  }

  function rows() {
    return table ? Array.from(table.querySelectorAll("tbody tr[data-id]")) : [];
  }

  let timer = null;
  function schedule(ms) { clearTimeout(timer); timer = setTimeout(refresh, ms); }

  function refresh() {
    if (!table) return;
    const ids = rows().map((tr) => tr.dataset.id);
    if (!ids.length) { schedule(5000); return; }
    fetch(table.dataset.url + "?ids=" + ids.join(","), {headers: {"Accept": "application/json"}})
      .then((r) => r.json())
      .then((body) => {
        const byId = new Map(body.documents.map((d) => [String(d.id), d]));
        for (const tr of rows()) if (byId.has(tr.dataset.id)) update(tr, byId.get(tr.dataset.id));
        const busy = body.documents.some((d) => d.status !== "ready" && d.status !== "failed"
          && (!d.review_status || d.review_status === "approved"));
        schedule(busy ? 1000 : 5000);
      })
      .catch(() => schedule(5000));
  }

  // After an upload or a row's action: the current page again from the server (new
  // documents, counts, pager), swapped into the list; the handlers below are delegated.
  function reloadList() {
    const list = document.getElementById("document-list");
    if (!list) return refresh();
    fetch(window.location.href, {headers: {"Accept": "text/html"}})
      .then((r) => r.text())
      .then((html) => {
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("document-list");
        if (fresh) list.replaceChildren(...fresh.childNodes);
        table = document.getElementById("documents");
        selectionChanged();
        refresh();
      })
      .catch(() => refresh());
  }

  // --- selection and bulk actions ---
  function selected() {
    return Array.from(document.querySelectorAll("#documents .select-doc:checked"));
  }

  function selectionChanged() {
    const count = document.getElementById("bulk-count");
    const all = document.getElementById("select-page");
    const boxes = document.querySelectorAll("#documents .select-doc");
    const n = selected().length;
    if (count) count.textContent = fill(count.dataset.label, {n: n});
    document.querySelectorAll("#bulk-bar button").forEach((b) => { b.disabled = n === 0; });
    if (all) {
      all.checked = n > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    }
  }

  const list = document.getElementById("document-list");
  if (list) {
    list.addEventListener("change", (e) => {
      if (e.target.id === "select-page") {
        document.querySelectorAll("#documents .select-doc").forEach((b) => { b.checked = e.target.checked; });
      }
      if (e.target.id === "select-page" || e.target.classList.contains("select-doc")) selectionChanged();
    });
    list.addEventListener("submit", (e) => {
      if (e.target.id !== "bulk-form") return;
      const action = e.submitter ? e.submitter.value : "";
      const chosen = selected();
      if (!chosen.length) { e.preventDefault(); return; }
      const form = e.target;
      if (action === "delete" && !confirm(fill(form.dataset.confirmDelete, {n: chosen.length}))) e.preventDefault();
      const edited = chosen.some((b) => Number(b.closest("tr").dataset.manualEdits) > 0);
      if (action === "reingest" && edited && !confirm(form.dataset.confirmReingest)) e.preventDefault();
    });
    list.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-action]");
      if (!button || !table) return;
      const tr = button.closest("tr");
      const id = tr.dataset.id;
      if (button.dataset.action === "retry") {
        // Re-ingesting replaces the chunks, manual chunk edits included: ask first.
        if (Number(tr.dataset.manualEdits) > 0 && !confirm(table.dataset.confirmReingest)) return;
        post(table.dataset.retryUrl.replace("/0/", "/" + id + "/")).then(reloadList);
      } else if (button.dataset.action === "delete") {
        if (confirm(table.dataset.confirm)) post(table.dataset.deleteUrl.replace("/0/", "/" + id + "/")).then(reloadList);
      }
    });
    selectionChanged();
  }
  refresh();
})();
