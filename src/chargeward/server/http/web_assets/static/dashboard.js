// Chargeward dashboard: progressive enhancement only; every page works without it.
// [data-live=URL]: replaced every 2 s by the fragment at URL (campaign progress).
// [data-preview=URL]: the selects inside ask URL?model=&site= how many stations match.
"use strict";
(function () {
  async function fetchText(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
    if (r.status === 401) { window.location = "/login?next=" + encodeURIComponent(location.pathname); return null; }
    return r.ok ? r.text() : null;
  }
  function live(el) {
    const url = el.dataset.live;
    async function tick() {
      if (document.visibilityState === "visible") {
        const open = el.querySelector("details[open]") !== null;
        const html = await fetchText(url).catch(() => null);
        if (html !== null) {
          el.innerHTML = html;
          const d = el.querySelector("details");
          if (open && d) d.open = true;
          el.dataset.updated = new Date().toISOString();
        }
      }
      setTimeout(tick, 2000);
    }
    setTimeout(tick, 2000);
  }
  function preview(box) {
    const out = box.querySelector("[aria-live]");
    async function update() {
      const q = new URLSearchParams();
      box.querySelectorAll("select").forEach((s) => q.set(s.name, s.value));
      const html = await fetchText(box.dataset.preview + "?" + q).catch(() => null);
      if (html !== null) out.innerHTML = html;
    }
    box.querySelectorAll("select").forEach((s) => s.addEventListener("change", update));
    update();
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("[data-preview]").forEach(preview);
  });
})();
