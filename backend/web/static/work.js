// The work view: answer with one key, the next item arrives without a page reload.
// Plain JavaScript, no dependencies. The form also works without JavaScript.
(function () {
  "use strict";
  const root = document.getElementById("work");
  const form = document.getElementById("verdict-form");
  if (!root || !form) return;
  const slot = document.getElementById("card-slot");
  const status = document.getElementById("status");
  const comment = document.getElementById("comment");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const scope = root.dataset.scope || "";
  let taskId = root.dataset.taskId;
  let shownAt = performance.now();
  let busy = false;

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", !!isError);
  }

  function setTask(id) {
    taskId = id ? String(id) : "";
    root.dataset.taskId = taskId;
    form.querySelectorAll("button").forEach(b => { b.disabled = !taskId; });
    if (taskId) {
      const q = scope ? "?queue=" + encodeURIComponent(scope) : "";
      history.replaceState(null, "", "/work/" + taskId + q);
      const card = slot.querySelector(".item-card");
      document.getElementById("queue-name").textContent = card ? card.dataset.queue || "" : "";
    }
    shownAt = performance.now();
  }

  async function send(action, label) {
    if (busy || !taskId) return;
    busy = true;
    const body = new URLSearchParams();
    body.set("csrf", csrf);
    body.set("scope", scope);
    if (action === "verdict") {
      body.set("label", label);
      body.set("comment", comment.value);
      body.set("time_spent_ms", String(Math.round(performance.now() - shownAt)));
    }
    const card = slot.querySelector(".item-card");
    if (card) card.classList.add("loading");
    say(action === "verdict" ? "saving…" : "skipping…");
    try {
      const resp = await fetch("/work/" + taskId + "/" + action, {
        method: "POST", body: body, credentials: "same-origin",
        headers: {"X-CSRF-Token": csrf, "X-Requested-With": "fetch", "Accept": "application/json"},
      });
      const data = await resp.json().catch(() => ({message: "unexpected answer (" + resp.status + ")"}));
      if (resp.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
      if (!resp.ok) {
        if (card) card.classList.remove("loading");
        say(data.message || ("error " + resp.status), true);
        if (resp.status === 409) { setTimeout(() => location.reload(), 1200); }
        return;
      }
      slot.innerHTML = data.html;
      comment.value = "";
      document.getElementById("items-today").textContent = data.items_today;
      setTask(data.task_id);
      say(action === "verdict" ? "saved: " + label : "skipped");
    } catch (err) {
      if (card) card.classList.remove("loading");
      say("network error — press the key again", true);
    } finally {
      busy = false;
    }
  }

  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const btn = ev.submitter;
    if (btn && btn.id === "skip") send("skip");
    else if (btn && btn.name === "label") send("verdict", btn.value);
  });

  const byKey = {};
  form.querySelectorAll("button.label").forEach(b => { if (b.dataset.key) byKey[b.dataset.key] = b; });

  document.addEventListener("keydown", ev => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target === comment) {
      if (ev.key === "Escape") comment.blur();
      if (ev.key === "Enter") { ev.preventDefault(); comment.blur(); }  // never an implicit "OK"
      return;
    }
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement
        || ev.target instanceof HTMLTextAreaElement) return;
    const key = ev.key.toLowerCase();
    if (byKey[key]) {
      ev.preventDefault();
      const b = byKey[key];
      b.classList.add("pressed");
      setTimeout(() => b.classList.remove("pressed"), 150);
      send("verdict", b.value);
    } else if (key === "s") { ev.preventDefault(); send("skip"); }
    else if (key === "c") { ev.preventDefault(); comment.focus(); }
    else if (key === "l") { const a = document.getElementById("item-link"); if (a) { ev.preventDefault(); window.open(a.href, "_blank", "noopener"); } }
    else if (key === "q") { ev.preventDefault(); location.href = "/queues"; }
  });

  setTask(taskId);
})();
