// Hit testing after a restart: the page says the models are loading (ragapp.warmup); poll
// /warmup.json and run the search (reload this URL, which carries the question) once this
// web process is no longer warming. No inline script: the CSP forbids it.
(function () {
  "use strict";
  const notice = document.getElementById("warmup-notice");
  if (!notice) return;
  const url = notice.dataset.warmupUrl;
  const detail = document.getElementById("warmup-detail");
  const started = Date.now();
  const MAX_WAIT_MS = 10 * 60 * 1000; // then search anyway: the search waits for the models

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then((response) => (response.ok ? response.json() : null))
      .then((state) => {
        if (state && state.status === "warming" && Date.now() - started < MAX_WAIT_MS) {
          if (detail && state.loading) {
            detail.textContent = state.loading + " · " + Math.round(state.seconds || 0) + " s";
          }
          window.setTimeout(poll, 1500);
        } else {
          window.location.reload();
        }
      })
      .catch(() => window.setTimeout(poll, 3000));
  }
  window.setTimeout(poll, 1000);
})();

// "Save as test case": a passage can appear in two lists (reranked and answer order); ticking
// it in one ticks it in the other, and the button waits for at least one tick.
(function () {
  "use strict";
  const form = document.getElementById("case-form");
  if (!form) return;
  const button = document.getElementById("save-case");
  const boxes = Array.from(document.querySelectorAll('input[name="chunk"][form="case-form"]'));
  function update() {
    button.disabled = !boxes.some((box) => box.checked);
  }
  boxes.forEach((box) => {
    box.addEventListener("change", () => {
      boxes.forEach((other) => {
        if (other !== box && other.value === box.value) other.checked = box.checked;
      });
      update();
    });
  });
  update();
})();
