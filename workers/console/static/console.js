// The console's one script: keyboard shortcuts, the live queue (server-sent events), and
// the alert page's bank-change status. Text from the server is only ever set as
// textContent, never as HTML.
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function typing(event) {
  const t = event.target.tagName;
  return t === "INPUT" || t === "TEXTAREA" || t === "SELECT" || event.ctrlKey || event.metaKey || event.altKey;
}

// -- the queue ------------------------------------------------------------------------

function queueRows() { return Array.from(document.querySelectorAll("#queue tbody tr")); }

function select(row) {
  queueRows().forEach((r) => r.classList.remove("selected"));
  if (row) { row.classList.add("selected"); row.scrollIntoView({ block: "nearest" }); }
}

function selected() { return document.querySelector("#queue tr.selected"); }

function alertRow(a) {
  const tr = el("tr", undefined, "new");
  tr.dataset.href = "/alerts/" + encodeURIComponent(a.message_id);
  tr.dataset.id = a.message_id;
  tr.append(el("td", a.time), el("td", a.score.toFixed(3), "score"), el("td", a.category || "-"));
  tr.append(el("td", a.status, "status " + a.status), el("td", a.sender + " → " + a.recipient));
  const cell = el("td", undefined, "excerpt");
  const link = el("a", a.excerpt || "(text not read yet)");
  link.href = tr.dataset.href;
  cell.append(link);
  tr.append(cell);
  return tr;
}

function liveQueue() {
  const live = document.getElementById("live");
  if (!live || live.hidden) return;
  const source = new EventSource("/events?after=" + live.dataset.after);
  source.addEventListener("alert", (event) => {
    const a = JSON.parse(event.data);
    const old = document.querySelector('#queue tr[data-id="' + CSS.escape(a.message_id) + '"]');
    if (old) old.remove();
    if (live.dataset.status !== "any" && a.status !== live.dataset.status) return;
    const empty = document.getElementById("empty");
    if (empty) empty.remove();
    const row = alertRow(a);
    document.querySelector("#queue tbody").prepend(row);
    if (!selected()) select(row); // the keys work on the first alert of an empty queue
    const total = document.getElementById("total");
    if (!old) total.textContent = String(Number(total.textContent) + 1);
  });
}

function queueKeys(event) {
  const rows = queueRows();
  const current = selected();
  const at = rows.indexOf(current);
  if (event.key === "j") select(rows[Math.min(at + 1, rows.length - 1)]);
  else if (event.key === "k") select(rows[Math.max(at - 1, 0)]);
  else if (current && event.key === "Enter") location.href = current.dataset.href;
  else if (current && event.key === "c") location.href = current.dataset.href + "#confirm";
  else if (current && event.key === "x") location.href = current.dataset.href + "#clear";
  else return;
  event.preventDefault();
}

// -- an alert ---------------------------------------------------------------------------

function alertKeys(event) {
  if (event.key === "c" && document.getElementById("confirm-button")) {
    document.getElementById("confirm-button").click();
  } else if (event.key === "x" && document.getElementById("clear-reason")) {
    document.getElementById("clear-reason").focus();
  } else if (event.key === "j" || event.key === "k" || event.key === "Escape") {
    location.href = "/queue";
  } else return;
  event.preventDefault();
}

function showChanges(data) {
  const box = document.getElementById("bank-changes");
  box.replaceChildren();
  if (data.verdicts.length) {
    const list = el("ul");
    list.id = "verdicts";
    data.verdicts.forEach((v) => {
      list.append(el("li", v.time + ": " + v.verdict + (v.category ? " (" + v.category + ")" : "") +
        " by " + v.analyst + (v.reason ? ": " + v.reason : "")));
    });
    document.getElementById("verdicts").replaceWith(list);
  }
  if (!data.changes.length) {
    box.append(el("p", data.verdicts.length ? "Waiting for the feedback processor's bank change…" : ""));
    return false;
  }
  const table = el("table");
  table.id = "bank-change-table";
  const head = el("tr");
  ["when (UTC)", "reference", "label", "category", "state", "by", "why", "offset"].forEach((h) => head.append(el("th", h)));
  table.append(head);
  data.changes.forEach((c) => {
    const tr = el("tr");
    [c.time, String(c.reference_id), c.label || "removed", c.category || "-", c.disabled ? "disabled" : "active",
      c.changed_by || "-", c.reason || "", c.partition + ":" + c.offset].forEach((t) => tr.append(el("td", t)));
    table.append(tr);
  });
  box.append(table);
  let all = data.workers.length > 0;
  const workers = el("ul");
  workers.id = "workers";
  data.workers.forEach((w) => {
    let text = w.url + ": ";
    if (w.error) text += "unreachable (" + w.error + ")";
    else text += (w.applied ? "applied, " : "not yet applied, ") + "bank version " + w.index_version;
    if (!w.applied) all = false;
    const stamp = w.applied ? " (seen at " + new Date().toISOString().slice(11, 19) + " UTC)" : "";
    workers.append(el("li", text + stamp, w.applied ? "applied" : "pending"));
  });
  box.append(el("h4", data.workers.length ? "Workers" : "No worker addresses configured (--worker-urls)"), workers);
  return all;
}

function watchChanges() {
  const box = document.getElementById("changes");
  if (!box) return;
  let tries = 0;
  const tick = () => {
    fetch(box.dataset.url, { credentials: "same-origin" })
      .then((r) => r.json())
      .then((data) => {
        const done = showChanges(data);
        tries += 1;
        if (!done && tries < 120) setTimeout(tick, 500);
      });
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  document.addEventListener("keydown", (event) => {
    if (typing(event)) return;
    if (page === "queue") queueKeys(event);
    if (page === "alert") alertKeys(event);
  });
  if (page === "queue") {
    liveQueue();
    document.getElementById("queue").addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-href]");
      if (row && event.target.tagName !== "A") location.href = row.dataset.href;
    });
    select(queueRows()[0]);
  }
  if (page === "alert") {
    watchChanges();
    if (location.hash === "#clear" && document.getElementById("clear-reason")) document.getElementById("clear-reason").focus();
    if (location.hash === "#confirm" && document.getElementById("confirm-button")) document.getElementById("confirm-button").focus();
  }
});
