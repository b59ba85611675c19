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
  // the lease: this item is reserved for me until leaseEnds; renewed on activity
  const leaseBox = document.getElementById("lease");
  let leaseSeconds = Number(root.dataset.leaseSeconds) || 0;
  let leaseEnds = NaN;  // by this browser's clock: now + the seconds left the server said
  let renewing = false;
  const PENDING = "quorum.pending-answer";

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", !!isError);
  }

  function setLease(left, seconds) {
    leaseEnds = (left === null || left === undefined || left === "") ? NaN : Date.now() + Number(left) * 1000;
    if (seconds) leaseSeconds = Number(seconds);
    tick();
  }

  function mmss(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function tick() {
    if (!leaseBox) return;
    if (!taskId || isNaN(leaseEnds)) { leaseBox.textContent = ""; return; }
    const left = leaseEnds - Date.now();
    const warnAt = Math.min(60000, leaseSeconds * 250);  // a minute, or a quarter of a short lease
    leaseBox.textContent = "reserved for you: " + mmss(left);
    leaseBox.classList.toggle("warn", left <= warnAt);
    if (left <= 0) {
      renew(true);  // still mine if nobody took it; otherwise renew() moves on
    } else if (left <= warnAt && !busy) {
      say("Your hold on this item ends in " + mmss(left) + ": press any key (or move the mouse) to keep it.", true);
    }
  }

  async function renew(lapsed) {
    if (renewing || busy || !taskId || isNaN(leaseEnds) || !leaseSeconds) return;
    if (!lapsed && leaseEnds - Date.now() > leaseSeconds * 500) return;  // once half is gone
    renewing = true;
    try {
      const resp = await fetch("/work/" + taskId + "/renew", {
        method: "POST", body: new URLSearchParams({csrf: csrf}), credentials: "same-origin",
        headers: {"X-CSRF-Token": csrf, "X-Requested-With": "fetch", "Accept": "application/json"},
      });
      const data = await resp.json().catch(() => ({}));
      if (resp.ok) { setLease(data.lease_left_s, data.lease_seconds); if (status.classList.contains("error")) say("kept: this item is still yours"); }
      else if (resp.status === 409) moveOn("Your hold on that item ran out and it went back to its queue (" + (data.message || "lease lost") + "). Here is the next item.");
      else if (resp.status === 401) signedOut(null);
    } catch (err) { /* the next activity tries again */ }
    finally { renewing = false; }
  }

  async function moveOn(message) {
    if (busy) return;
    busy = true;
    const id = taskId;
    setTask("");
    try {
      const resp = await fetch("/work/next", {
        method: "POST", body: new URLSearchParams({csrf: csrf, scope: scope}), credentials: "same-origin",
        headers: {"X-CSRF-Token": csrf, "X-Requested-With": "fetch", "Accept": "application/json"},
      });
      if (resp.status === 401) { signedOut(null, id); return; }
      const data = await resp.json();
      slot.innerHTML = data.html;
      comment.value = "";
      document.getElementById("items-today").textContent = data.items_today;
      setTask(data.task_id, data.lease_left_s, data.lease_seconds);
      say(String(data.task_id) === id ? "That item was still free, so it is yours again." : message, true);
    } catch (err) {
      say(message + " (could not load the next item: press Q for the queues)", true);
    } finally {
      busy = false;
    }
  }

  function signedOut(pending, id) {
    // Keep the answer that could not be sent; it is sent again once signed in
    if (pending) sessionStorage.setItem(PENDING, JSON.stringify(pending));
    const q = scope ? "?queue=" + encodeURIComponent(scope) : "";
    location.href = "/login?next=" + encodeURIComponent("/work/" + (id || taskId) + q);
  }

  function setTask(id, leaseLeft, seconds) {
    taskId = id ? String(id) : "";
    setLease(leaseLeft, seconds);
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
      if (resp.status === 401) {
        signedOut(action === "verdict" ? {task: taskId, label: label, comment: comment.value,
                                          time_spent_ms: body.get("time_spent_ms")} : null);
        return;
      }
      if (!resp.ok) {
        if (card) card.classList.remove("loading");
        if (resp.status === 409) {
          busy = false;
          moveOn((data.message || "This item is no longer yours") + ". Your answer was not recorded; here is the next item.");
          return;
        }
        say(data.message || ("error " + resp.status), true);
        return;
      }
      slot.innerHTML = data.html;
      comment.value = "";
      document.getElementById("items-today").textContent = data.items_today;
      setTask(data.task_id, data.lease_left_s, data.lease_seconds);
      say(action === "verdict" ? "saved: " + label : "skipped");
    } catch (err) {
      if (card) card.classList.remove("loading");
      say("network error — press the key again", true);
    } finally {
      busy = false;
    }
  }

  async function undoLast() {
    if (busy) return;
    busy = true;
    say("undoing…");
    try {
      const body = new URLSearchParams({csrf: csrf, scope: scope});
      if (taskId) body.set("current", taskId);
      const resp = await fetch("/work/undo", {
        method: "POST", body: body, credentials: "same-origin",
        headers: {"X-CSRF-Token": csrf, "X-Requested-With": "fetch", "Accept": "application/json"},
      });
      if (resp.status === 401) { signedOut(null); return; }
      const data = await resp.json().catch(() => ({message: "unexpected answer (" + resp.status + ")"}));
      if (!resp.ok) { say(data.message || ("error " + resp.status), true); return; }
      slot.innerHTML = data.html;
      comment.value = "";
      document.getElementById("items-today").textContent = data.items_today;
      setTask(data.task_id, data.lease_left_s, data.lease_seconds);
      say("Undid your verdict \u201c" + data.undone_label + "\u201d: answer this item again.");
    } catch (err) {
      say("network error — press U again", true);
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

  document.addEventListener("mousemove", () => renew(), {passive: true});
  document.addEventListener("keydown", ev => {
    renew();
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
    else if (key === "u") { ev.preventDefault(); undoLast(); }
  });

  setTask(taskId, root.dataset.leaseLeft, root.dataset.leaseSeconds);
  setInterval(tick, 1000);
  // an answer that was pressed while signed out: send it now, or say why not
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  if (pending && pending.task === taskId) {
    comment.value = pending.comment || "";
    send("verdict", pending.label).then(() => {
      if (!status.classList.contains("error")) say("You were signed out; your answer \u201c" + pending.label + "\u201d was saved after you signed in again.");
    });
  } else if (pending) {
    say("You were signed out and that item went back to its queue, so your answer \u201c" + pending.label + "\u201d was not saved.", true);
  }
})();
