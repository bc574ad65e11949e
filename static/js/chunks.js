// The document's chunk list (templates/ingestion/document_view.html): ask before deleting.
// A separate file because the Content-Security-Policy allows no inline script.
"use strict";
document.querySelectorAll("form.confirm").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});
