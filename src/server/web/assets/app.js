// threadsync's pages work without this script; it adds live updates (the
// thread list, a thread's new messages), search as you type, "Show all"
// in place, and local times. Everything it inserts is HTML the server
// rendered and escaped.
"use strict";

(function () {
  const page = document.body.dataset.page;

  // Times in the reader's zone and language.
  function localTimes(root) {
    for (const t of root.querySelectorAll("time[datetime]")) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) {
        t.title = t.textContent;
        t.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
      }
    }
  }
  localTimes(document);

  // Reconnects by itself (EventSource does); `onchange` runs once per burst.
  function listen(url, onchange) {
    if (!window.EventSource) return;
    let timer = null;
    const es = new EventSource(url);
    es.addEventListener("change", () => {
      clearTimeout(timer);
      timer = setTimeout(onchange, 100);
    });
    window.addEventListener("pagehide", () => es.close());
  }

  // ----- the thread list ---------------------------------------------------
  if (page === "threads") {
    listen("/events", async () => {
      const r = await fetch("/threads?partial=1", { credentials: "same-origin" });
      if (!r.ok || r.redirected) return;
      const region = document.getElementById("threads-region");
      region.innerHTML = await r.text();
      localTimes(region);
    });
  }

  // ----- a thread ------------------------------------------------------------
  const list = document.getElementById("messages");
  if (list && list.dataset.live === "1") {
    const base = list.dataset.base;
    const events = base.startsWith("/s/") ? base + "/events" : "/events";
    let busy = false, again = false;
    async function update() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        do {
          again = false;
          const q = new URLSearchParams({ v: list.dataset.version, n: list.dataset.count, last: list.dataset.last });
          const r = await fetch(base + "/since?" + q, { credentials: "same-origin" });
          if (!r.ok || r.redirected) return;
          const d = await r.json();
          if (d.reload) { location.reload(); return; }
          if (d.html) {
            const tmp = document.createElement("template");
            tmp.innerHTML = d.html;
            const added = Array.from(tmp.content.children);
            list.append(tmp.content);
            for (const li of added) { localTimes(li); wireLoadFull(li); }
            list.dataset.count = d.count;
            if (added.length) list.dataset.last = added[added.length - 1].dataset.id;
          }
          if (d.title !== undefined) {
            const h = document.getElementById("thread-title");
            if (h && d.title) h.textContent = d.title;
          }
          list.dataset.version = d.version;
        } while (again);
      } finally { busy = false; }
    }
    listen(events, update);
  }

  // "Show all": the whole message in place of its preview.
  function wireLoadFull(root) {
    for (const a of root.querySelectorAll("a.load-full")) {
      a.addEventListener("click", async (e) => {
        e.preventDefault();
        a.setAttribute("aria-busy", "true");
        const r = await fetch(a.href + (a.href.includes("?") ? "&" : "?") + "partial=1", { credentials: "same-origin" });
        if (!r.ok) { a.removeAttribute("aria-busy"); return; }
        const body = a.closest(".body");
        const tmp = document.createElement("template");
        tmp.innerHTML = await r.text();
        body.replaceWith(tmp.content);
      });
    }
  }
  wireLoadFull(document);

  // ----- search as you type --------------------------------------------------
  const q = document.getElementById("q");
  const region = document.getElementById("results-region");
  if (q && region) {
    let timer = null, seq = 0;
    q.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const mine = ++seq;
        const text = q.value;
        const r = await fetch("/search?" + new URLSearchParams({ q: text, partial: "1" }), { credentials: "same-origin" });
        if (!r.ok || r.redirected || mine !== seq) return;
        region.innerHTML = await r.text();
        history.replaceState(null, "", "/search?" + new URLSearchParams({ q: text }));
      }, 150);
    });
  } else if (q) {
    // Elsewhere, typing in the header's box goes to the search page.
    q.addEventListener("input", () => {
      if (q.value.trim().length >= 2 && !q.dataset.went) {
        q.dataset.went = "1";
        location.href = "/search?" + new URLSearchParams({ q: q.value });
      }
    });
  }

  // A deep link to a message: show it.
  if (location.hash.startsWith("#m-")) {
    const el = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (el) { el.classList.add("target"); el.scrollIntoView({ block: "start" }); }
  }
})();
