// Cluster review by keyboard: move between tiles, tick, all / none / invert, Enter decides.
// Nothing is pre-ticked; the button says how many are ticked and is off at zero; the time
// from the first interaction to the decision is sent (the server records it per item).
(function () {
  "use strict";
  document.querySelectorAll("form.cluster").forEach(form => {
    const boxes = Array.from(form.querySelectorAll('input[name="task_ids"]'));
    const count = form.querySelector(".selected-count");
    const button = form.querySelector("button.decide");
    const spent = form.querySelector('input[name="time_spent_ms"]');
    let started = null;

    function touch() { if (started === null) started = performance.now(); }
    function update() {
      const n = boxes.filter(b => b.checked).length;
      count.textContent = n + " of " + boxes.length + " ticked";
      button.disabled = n === 0;
      button.textContent = n ? "Decide the " + n + " ticked" : "Decide the ticked";
    }
    boxes.forEach(b => b.addEventListener("change", () => { touch(); update(); }));
    form.addEventListener("submit", () => {
      if (started !== null) spent.value = String(Math.round(performance.now() - started));
    });
    form.addEventListener("keydown", ev => {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      const t = ev.target;
      if (t instanceof HTMLSelectElement || (t instanceof HTMLInputElement && t.type !== "checkbox")) return;
      const at = boxes.indexOf(t);
      const key = ev.key.toLowerCase();
      const move = d => { const i = Math.max(0, Math.min(boxes.length - 1, (at < 0 ? 0 : at + d))); boxes[i].focus(); };
      if (key === "arrowright" || key === "arrowdown" || key === "k") { ev.preventDefault(); touch(); move(1); }
      else if (key === "arrowleft" || key === "arrowup" || key === "j") { ev.preventDefault(); touch(); move(-1); }
      else if (key === "x" && at >= 0) { ev.preventDefault(); touch(); t.checked = !t.checked; update(); }
      else if (key === "a") { ev.preventDefault(); touch(); boxes.forEach(b => { b.checked = true; }); update(); }
      else if (key === "n") { ev.preventDefault(); touch(); boxes.forEach(b => { b.checked = false; }); update(); }
      else if (key === "i") { ev.preventDefault(); touch(); boxes.forEach(b => { b.checked = !b.checked; }); update(); }
      else if (key === "enter" && at >= 0) { ev.preventDefault(); if (!button.disabled) form.requestSubmit(button); }
    });
    update();
  });
})();
