// crossvisor serve: live progress. Every element with data-progress-url is refreshed from that
// JSON endpoint every 2 s while its campaign runs; when the campaign finishes the page reloads to
// show the final matrix. Read-only: GET requests to the same origin only.
"use strict";
(function () {
  const KINDS = ["pass", "warn", "fail", "error", "skipped", "running"];

  function update(el, doc) {
    const p = doc.progress;
    if (doc.workflow_status !== "running") {
      if (el.dataset.status === "running") window.location.reload();
      return false;
    }
    if (!p) return true;
    const c = p.counts || {};
    const total = Math.max(c.total || 0, 1);
    for (const k of KINDS) {
      const seg = el.querySelector("i[data-k='" + k + "']");
      if (seg) seg.style.width = (100 * (c[k] || 0) / total).toFixed(2) + "%";
    }
    for (const b of el.querySelectorAll("b[data-count]")) {
      const v = c[b.dataset.count];
      if (v !== undefined) b.textContent = String(v);
    }
    return true;
  }

  function poll(el) {
    fetch(el.dataset.progressUrl, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((doc) => {
        if (doc && update(el, doc) === false) return;
        setTimeout(() => poll(el), 2000);
      })
      .catch(() => setTimeout(() => poll(el), 5000));
  }

  for (const el of document.querySelectorAll("[data-progress-url]")) {
    if (el.dataset.status === "running") setTimeout(() => poll(el), 2000);
  }
})();
