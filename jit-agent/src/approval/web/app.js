// jit's review page. Every string that came from the daemon is put into the document with
// textContent, never parsed as markup: the daemon escapes control and invisible characters, and the
// page never interprets anything as markup.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let csrf = null;
  let stream = null;
  let cards = new Map(); // request id -> { card element, data, shownAt }
  let refreshTimer = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function status(message, isError) {
    const s = $("status");
    s.textContent = message || "";
    s.className = isError ? "error" : "";
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
    const response = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    const text = await response.text();
    if (text) { try { data = JSON.parse(text); } catch (_) { data = { error: text }; } }
    if (response.status === 401 && path !== "/ui/login") { signedOut(); }
    if (!response.ok) throw new Error((data && data.error) || ("HTTP " + response.status));
    return data;
  }

  function show(view) {
    for (const v of ["login-view", "pending-view", "history-view"]) $(v).hidden = v !== view;
    $("tab-pending").setAttribute("aria-pressed", String(view === "pending-view"));
    $("tab-history").setAttribute("aria-pressed", String(view === "history-view"));
  }

  function signedOut() {
    csrf = null;
    if (stream) { stream.close(); stream = null; }
    $("nav").hidden = true;
    cards.clear();
    $("cards").replaceChildren();
    show("login-view");
    $("token").focus();
  }

  function signedIn(session) {
    csrf = session.csrf;
    $("who").textContent = "signed in as " + session.reviewer;
    $("nav").hidden = false;
    show("pending-view");
    refresh();
    follow();
  }

  function follow() {
    if (stream) stream.close();
    stream = new EventSource("/ui/stream");
    stream.onopen = () => { $("live").classList.add("on"); };
    stream.onerror = () => { $("live").classList.remove("on"); };
    const changed = (event) => {
      let record = {};
      try { record = JSON.parse(event.data); } catch (_) { /* keep-alive or other */ }
      const t = record.type;
      if (t === "kernel" && record.kind === "hold") {
        // The daemon lists a hold once its record is durable (after the audit log's fsync),
        // which may be a moment after the record is streamed: look again until it is listed.
        awaitHold(String(record.request_id), 0);
      }
      if (t === "approval" || t === "hold_ended" || t === "justification" ||
          (t === "kernel" && record.kind === "hold") || event.type === "lagged") {
        scheduleRefresh();
        if (!$("history-view").hidden) loadHistory();
      }
    };
    stream.onmessage = changed;
    stream.addEventListener("lagged", changed);
  }

  function awaitHold(id, tries) {
    if (cards.has(id) || tries >= 8) return;
    setTimeout(async () => { await refresh(); awaitHold(id, tries + 1); }, 250 * Math.pow(2, Math.min(tries, 4)));
  }

  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 150);
  }

  function duration(secs) {
    secs = Math.max(0, Math.round(secs));
    const m = Math.floor(secs / 60), s = secs % 60;
    return m > 0 ? m + "m " + String(s).padStart(2, "0") + "s" : s + "s";
  }

  function field(dl, name, value, extraClass) {
    if (value === null || value === undefined || value === "" || (Array.isArray(value) && value.length === 0)) return;
    dl.append(el("dt", { text: name }));
    const dd = el("dd", extraClass ? { class: extraClass } : {});
    dd.textContent = Array.isArray(value) ? value.join(" \u2190 ") : String(value);
    dl.append(dd);
    return dd;
  }

  function renderCard(c) {
    const risk = c.risk ? String(c.risk).toLowerCase() : "";
    const titleId = "card-title-" + c.id;
    const card = el("article", { class: "card" + (risk ? " risk-" + risk.replace(/[^a-z]/g, "") : ""), "aria-labelledby": titleId, "data-id": c.id });
    const title = el("h3", { id: titleId });
    title.append(el("span", { text: c.op + " " + c.path }));
    if (risk) { title.append(" "); title.append(el("span", { class: "badge " + risk.replace(/[^a-z]/g, ""), text: "risk " + c.risk })); }
    card.append(title);
    const dl = el("dl");
    field(dl, "request", c.id);
    field(dl, "agent", c.agent);
    if (c.ends) { field(dl, "from", c.ends[0]); field(dl, "to", c.ends[1]); }
    field(dl, "rule", c.rule === null ? "(the agent's default)" : c.rule);
    field(dl, "hint", c.hint);
    field(dl, "runs", c.runs);
    field(dl, "env", c.env);
    field(dl, c.runs ? "called by" : "argv", c.argv);
    field(dl, "exe", c.exe);
    field(dl, "cwd", c.cwd);
    field(dl, "user", c.user);
    field(dl, "pid", c.pid);
    field(dl, "parents", c.parents);
    field(dl, "target", c.target);
    const held = field(dl, "held for", duration(c.age_secs));
    const timer = field(dl, "on timeout", c.on_timeout + " in " + duration(c.timeout_in_secs), "timer");
    if (c.justification) {
      field(dl, "agent says", "\u201c" + c.justification + "\u201d (unverified, from pid " + c.justification_pid + ")", "unverified");
    }
    field(dl, "decided by", c.approvers.length ? c.approvers.join(", ") : null);
    const missing = Math.max(0, c.required_approvals - c.approvals.length);
    field(dl, "approvals", c.approvals.length + " of " + c.required_approvals +
      (c.approvals.length ? " (" + c.approvals.join(", ") + ")" : "") + (missing ? ", " + missing + " still needed" : ""));
    card.append(dl);

    const actions = el("div", { class: "actions", role: "group", "aria-label": "Decide request " + c.id });
    const reasonId = "reason-" + c.id;
    const reason = el("input", { id: reasonId, type: "text", maxlength: "500", placeholder: "why (recorded in the audit log)" });
    actions.append(el("label", { for: reasonId, text: "Reason" }), reason);
    const row1 = el("div", { class: "row" });
    const once = el("button", { type: "button", class: "approve", "data-action": "approve-once", text: "Approve once" });
    const forSel = el("select", { "aria-label": "Approval duration", id: "for-" + c.id });
    for (const d of ["15m", "1h", "4h", "8h"]) forSel.append(el("option", { value: d, text: d }));
    const forBtn = el("button", { type: "button", class: "approve", "data-action": "approve-for", text: "Approve for" });
    row1.append(once, forBtn, forSel);
    const row2 = el("div", { class: "row" });
    const deny = el("button", { type: "button", class: "deny", "data-action": "deny", text: "Deny" });
    const kill = el("button", { type: "button", class: "kill", "data-action": "kill", text: "Kill process" });
    row2.append(deny, kill);
    actions.append(row1, row2);
    card.append(actions);

    const buttons = [once, forBtn, deny, kill];
    const decide = async (verb, body, label) => {
      const why = reason.value.trim();
      if (why) body.reason = why;
      buttons.forEach((b) => { b.disabled = true; });
      try {
        const done = await api("POST", "/ui/pending/" + encodeURIComponent(c.id) + "/" + verb, body);
        if (done.approvals_missing > 0) {
          status("Request " + c.id + ": approval recorded, " + done.approvals_missing + " more needed.");
        } else {
          status("Request " + c.id + " " + done.outcome + ".");
          removeCard(c.id);
        }
      } catch (e) {
        status("Request " + c.id + ": " + e.message, true);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
        scheduleRefresh();
      }
    };
    once.addEventListener("click", () => decide("approve", { once: true }));
    forBtn.addEventListener("click", () => decide("approve", { for: forSel.value }));
    deny.addEventListener("click", () => decide("deny", {}));
    kill.addEventListener("click", () => {
      if (window.confirm("Kill the held process " + c.pid + "?")) decide("kill", {});
    });
    return { card, held, timer, reason };
  }

  function removeCard(id) {
    const entry = cards.get(id);
    if (entry) {
      const hadFocus = entry.card.contains(document.activeElement);
      entry.card.remove();
      cards.delete(id);
      if (hadFocus) $("pending-title").setAttribute("tabindex", "-1"), $("pending-title").focus();
    }
    updateCount();
  }

  function updateCount() {
    $("count").textContent = String(cards.size);
    $("empty").hidden = cards.size > 0;
  }

  async function refresh() {
    let list;
    try { list = await api("GET", "/ui/pending"); } catch (e) { if (csrf) status(e.message, true); return; }
    const now = Date.now();
    const seen = new Set();
    for (const c of list) {
      seen.add(c.id);
      const existing = cards.get(c.id);
      if (existing && JSON.stringify(existing.data) === JSON.stringify(c)) continue;
      const typed = existing ? existing.parts.reason.value : "";
      const parts = renderCard(c);
      parts.reason.value = typed;
      if (existing) existing.card.replaceWith(parts.card); else $("cards").append(parts.card);
      cards.set(c.id, { card: parts.card, parts, data: c, at: now });
    }
    for (const id of [...cards.keys()]) if (!seen.has(id)) removeCard(id);
    updateCount();
  }

  // The countdowns, between refreshes.
  setInterval(() => {
    const now = Date.now();
    for (const { parts, data, at } of cards.values()) {
      const gone = (now - at) / 1000;
      parts.held.textContent = duration(data.age_secs + gone);
      const left = data.timeout_in_secs - gone;
      parts.timer.textContent = data.on_timeout + " in " + duration(left);
      parts.timer.classList.toggle("urgent", left < 60);
    }
  }, 1000);

  async function loadHistory() {
    const form = new FormData($("history-form"));
    const query = new URLSearchParams();
    for (const [k, v] of form.entries()) if (String(v).trim()) query.set(k, String(v).trim());
    let list;
    try { list = await api("GET", "/ui/history?" + query.toString()); } catch (e) { status(e.message, true); return; }
    const body = $("history").tBodies[0];
    body.replaceChildren();
    for (const h of list) {
      const row = el("tr");
      for (const v of [h.time, h.id, h.decision + (h.approvals_missing ? " (" + h.approvals_missing + " more needed)" : ""),
        h.reviewer, h.agent, h.op, h.path, h.scope, h.reason]) {
        row.append(el("td", { text: v == null ? "" : String(v) }));
      }
      body.append(row);
    }
    if (list.length === 0) body.append(el("tr", {}, el("td", { colspan: "9", text: "No decisions match." })));
  }

  document.addEventListener("DOMContentLoaded", async () => {
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("token");
      const token = input.value;
      input.value = "";
      try {
        const session = await api("POST", "/ui/login", { token });
        status("");
        signedIn(session);
      } catch (e) {
        status("Sign-in failed: " + e.message, true);
        input.focus();
      }
    });
    $("logout").addEventListener("click", async () => {
      try { await api("POST", "/ui/logout", {}); } catch (_) { /* signed out anyway */ }
      status("Signed out.");
      signedOut();
    });
    $("tab-pending").addEventListener("click", () => { show("pending-view"); refresh(); });
    $("tab-history").addEventListener("click", () => { show("history-view"); loadHistory(); });
    $("history-form").addEventListener("submit", (event) => { event.preventDefault(); loadHistory(); });
    try { signedIn(await api("GET", "/ui/session")); } catch (_) { signedOut(); }
  });
})();
