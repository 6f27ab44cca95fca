// The console's only script: the live timeline (server-sent events) and the decision buttons.
// Plain JS, no libraries; the server renders every page and checks every action, this only adds liveness.
"use strict";

const RANK = { viewer: 1, approver: 2, admin: 3 };

function may(role) {
  return (RANK[document.body.dataset.role] || 0) >= RANK[role];
}

// The answer to what this operator did goes to the status line; what changed meanwhile goes to a live
// line of its own, so an update arriving a moment later never hides the answer.
function say(text) {
  const status = document.getElementById("status");
  if (status) status.textContent = text;
}

function announce(text) {
  const live = document.getElementById("live") || document.getElementById("status");
  if (live) live.textContent = text;
}

function button(id, verb, label) {
  const form = document.createElement("form");
  form.method = "post";
  form.action = `/console/decisions/${encodeURIComponent(id)}/${verb}`;
  form.className = "act";
  const b = document.createElement("button");
  b.type = "submit";
  b.dataset.verb = verb;
  b.textContent = label;
  form.append(b);
  return form;
}

function buttons(row) {
  const out = [];
  if (row.state === "awaiting_approval" && may("approver")) {
    out.push(button(row.id, "approve", "Approve"), button(row.id, "reject", "Reject"));
  }
  if ((row.state === "active" || row.state === "awaiting_approval") && may("admin")) {
    out.push(button(row.id, "undo", "Undo"));
  }
  return out;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function upsert(row) {
  const body = document.querySelector("#timeline tbody");
  if (!body) return;
  const tr = document.createElement("tr");
  tr.dataset.id = row.id;
  tr.dataset.state = row.state;
  tr.dataset.seenAt = String(Date.now());
  const when = document.createElement("td");
  const time = document.createElement("time");
  time.dateTime = row.created_at;
  time.textContent = row.created_at.slice(0, 19).replace("T", " ");
  when.append(time);
  const who = document.createElement("td");
  const link = document.createElement("a");
  link.href = `/console/subjects/${encodeURIComponent(row.subject)}`;
  link.textContent = row.subject;
  who.append(link);
  const state = cell(row.state);
  state.className = "state";
  const actions = document.createElement("td");
  actions.className = "actions";
  actions.append(...buttons(row));
  tr.append(when, who, cell(row.response), state, cell(row.score == null ? "" : String(row.score)),
    cell(row.rules.join(", ")), actions);
  const old = body.querySelector(`tr[data-id="${CSS.escape(row.id)}"]`);
  const focused = old && old.contains(document.activeElement) ? document.activeElement.dataset.verb : null;
  if (old) old.replaceWith(tr); else body.prepend(tr);
  refocus(tr, focused);
  announce(`${row.subject}: ${row.response} ${row.state}`);
}

// On a subject page: a decision of this subject that changes shows its new state and buttons in place.
function update(row) {
  const section = document.getElementById("decisions");
  if (!section || row.subject !== section.dataset.subject) return;
  const article = section.querySelector(`article[data-id="${CSS.escape(row.id)}"]`);
  if (!article) {
    announce(`a new decision about ${row.subject} (${row.response}): reload to see why`);
    return;
  }
  const state = article.querySelector(".state");
  if (state.textContent === row.state) return; // nothing the page shows changed: leave the buttons (and focus) be
  state.textContent = row.state;
  const actions = article.querySelector(".actions");
  const focused = actions.contains(document.activeElement) ? document.activeElement.dataset.verb : null;
  actions.replaceChildren(...buttons(row));
  refocus(actions, focused);
  announce(`${row.subject}: ${row.response} ${row.state}`);
}

// A keyboard user whose button was redrawn keeps their place: the same button, if it is still offered.
function refocus(within, verb) {
  if (!verb) return;
  const again = within.querySelector(`button[data-verb="${CSS.escape(verb)}"]`);
  if (again) again.focus();
}

function listen() {
  if (!document.getElementById("timeline") && !document.getElementById("decisions")) return;
  const source = new EventSource("/console/events");
  source.addEventListener("decision", (e) => {
    const row = JSON.parse(e.data);
    upsert(row);
    update(row);
  });
  source.addEventListener("open", () => { document.body.dataset.live = "yes"; });
  source.addEventListener("error", () => { document.body.dataset.live = "no"; });
}

// The buttons post with fetch so the answer (accepted, or why not) is read out in the status line.
document.addEventListener("submit", async (e) => {
  const form = e.target;
  if (!(form instanceof HTMLFormElement) || !form.classList.contains("act")) return;
  e.preventDefault();
  const verb = form.querySelector("button").dataset.verb;
  const answer = await fetch(form.action, { method: "POST", credentials: "same-origin", headers: { Accept: "application/json" } });
  const body = await answer.json().catch(() => ({}));
  say(answer.ok ? `${verb}: accepted` : `${verb} refused: ${body.error || answer.status}`);
});

document.addEventListener("DOMContentLoaded", listen);
