// Upload portal: drag and drop / picker uploads, and live document status by polling.
(function () {
  "use strict";
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]");
  const table = document.getElementById("documents");
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
          refresh();
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

  function row(d) {
    const tr = document.createElement("tr");
    tr.dataset.id = d.id;
    tr.dataset.status = d.status;
    const name = document.createElement("td");
    if (d.status === "ready" && table.dataset.viewUrl) {
      const link = document.createElement("a");
      link.href = table.dataset.viewUrl.replace("/0/", "/" + d.id + "/");
      link.textContent = d.name;
      name.appendChild(link);
    } else name.textContent = d.name;
    const status = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "badge " + d.status;
    // A contribution not approved yet is not ingested: its review is its status.
    const reviewed = !d.review_status || d.review_status === "approved";
    if (reviewed) badge.textContent = d.status_label + detail(d);
    else {
      badge.className = "badge review-" + d.review_status;
      badge.textContent = d.review_label + (d.review_reason ? ": " + d.review_reason : "");
    }
    status.appendChild(badge);
    if (reviewed && d.status !== "ready" && d.status !== "failed") {
      const bar = document.createElement("progress");
      bar.max = 100; bar.value = d.progress;
      status.appendChild(bar);
    }
    if (d.error) {
      const err = document.createElement("div");
      err.className = "error";
      err.textContent = d.error;
      status.appendChild(err);
    }
    const pages = document.createElement("td");
    pages.className = "hide-narrow";
    pages.textContent = d.pages == null ? "" : d.pages;
    const chunks = document.createElement("td");
    chunks.textContent = d.chunks;
    const actions = document.createElement("td");
    if (table.dataset.canEdit === "1") {
      const retry = document.createElement("button");
      retry.className = "small";
      retry.textContent = table.dataset.labelRetry;
      retry.addEventListener("click", () => {
        // Re-ingesting replaces the chunks, manual chunk edits included: ask first.
        if (d.manual_edits && !confirm(table.dataset.confirmReingest)) return;
        post(table.dataset.retryUrl.replace("/0/", "/" + d.id + "/")).then(refresh);
      });
      const del = document.createElement("button");
      del.className = "small danger";
      del.textContent = table.dataset.labelDelete;
      del.addEventListener("click", () => { if (confirm(table.dataset.confirm)) post(table.dataset.deleteUrl.replace("/0/", "/" + d.id + "/")).then(refresh); });
      if (reviewed) actions.append(retry, " ");
      actions.append(del);
    }
    tr.append(name, status, pages, chunks, actions);
    return tr;
  }

  let timer = null;
  function refresh() {
    if (!table) return;
    fetch(table.dataset.url, {headers: {"Accept": "application/json"}})
      .then((r) => r.json())
      .then((body) => {
        const tbody = table.querySelector("tbody");
        tbody.replaceChildren(...body.documents.map(row));
        if (!body.documents.length) {
          const tr = document.createElement("tr");
          const td = document.createElement("td");
          td.colSpan = 5; td.className = "muted"; td.textContent = table.dataset.empty || "—";
          tr.appendChild(td);
          tbody.appendChild(tr);
        }
        const busy = body.documents.some((d) => d.status !== "ready" && d.status !== "failed"
          && (!d.review_status || d.review_status === "approved"));
        clearTimeout(timer);
        timer = setTimeout(refresh, busy ? 1000 : 5000);
      })
      .catch(() => { clearTimeout(timer); timer = setTimeout(refresh, 5000); });
  }
  refresh();
})();
