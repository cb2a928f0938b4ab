// Switchboard web UI: live status over server-sent events, buttons that
// post, and forms that send JSON. Every address is relative to the page.
"use strict";

(function () {
  const root = document.body.dataset.root || "./";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function toast(text, bad) {
    const t = document.getElementById("toast");
    if (!t) return;
    t.textContent = text;
    t.className = "show" + (bad ? " bad" : "");
    clearTimeout(t._timer);
    t._timer = setTimeout(() => { t.className = ""; }, bad ? 8000 : 3000);
  }

  // Sends a request; resolves with the JSON answer, or rejects with the
  // problem document's detail.
  async function send(method, url, body) {
    const headers = { "X-CSRF-Token": csrf, "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) throw new Error((data && data.detail) || response.status + " " + response.statusText);
    return data;
  }
  window.switchboard = { send, toast, root };

  // Buttons: data-post="url" [data-confirm="question"] [data-then="url"].
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-post]");
    if (!button) return;
    event.preventDefault();
    const question = button.dataset.confirm;
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    try {
      const answer = await send("POST", button.dataset.post, button.dataset.body ? JSON.parse(button.dataset.body) : undefined);
      toast((answer && (answer.done || answer.detail)) || "Done");
      if (button.dataset.then) {
        window.location.href = button.dataset.then.replace("{id}", answer && answer.id);
      } else if (!document.querySelector("[data-live]")) {
        setTimeout(() => window.location.reload(), 400);
      }
    } catch (e) {
      toast(e.message, true);
    } finally {
      button.disabled = false;
    }
  });

  // Forms: data-post-json="url" [data-then="url with {id}"]; the fields
  // become a JSON object.
  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-post-json]");
    if (!form) return;
    event.preventDefault();
    const body = {};
    for (const [k, v] of new FormData(form).entries()) if (v !== "") body[k] = v;
    // A field set by path travels as the API's `edits` list.
    if (body.edit_path) body.edits = [{ path: body.edit_path, value: body.edit_value || "" }];
    delete body.edit_path;
    delete body.edit_value;
    const submit = form.querySelector("button[type=submit]");
    if (submit) submit.disabled = true;
    const out = form.querySelector(".form-result");
    try {
      const answer = await send("POST", form.dataset.postJson, body);
      const text = (answer && answer.done) || ("Done" + (answer && answer.id ? ": message " + answer.id : ""));
      toast(text);
      if (out) { out.textContent = text; out.classList.remove("problem"); }
      if (form.dataset.then && answer && answer.id !== undefined) {
        window.location.href = form.dataset.then.replace("{id}", answer.id);
      }
    } catch (e) {
      toast(e.message, true);
      if (out) { out.textContent = e.message; out.classList.add("problem"); }
    } finally {
      if (submit) submit.disabled = false;
    }
  });

  // Live status: elements with data-k="p:<production>:<field>" or
  // "i:<production>:<item>:<field>" follow the status stream.
  if (document.querySelector("[data-live=status]") && window.EventSource) {
    const stream = new EventSource(root + "api/v1/status/stream");
    stream.addEventListener("status", (event) => {
      let status;
      try { status = JSON.parse(event.data); } catch (_) { return; }
      const set = (key, value) => {
        const text = value === null || value === undefined ? "" : String(value);
        document.querySelectorAll('[data-k="' + CSS.escape(key) + '"]').forEach((el) => {
          if (el.classList.contains("badge")) el.dataset.state = text;
          if (el.textContent !== text) el.textContent = text;
        });
        // Elements that only follow the state, such as the controls.
        document.querySelectorAll('[data-s="' + CSS.escape(key) + '"]').forEach((el) => {
          el.dataset.state = text;
        });
      };
      for (const p of status.productions || []) {
        set("p:" + p.id + ":state", p.state);
        set("p:" + p.id + ":queued", p.queued);
        for (const i of p.items || []) {
          const k = "i:" + p.id + ":" + i.name + ":";
          for (const f of ["state", "queue_depth", "connections", "received", "sent", "errors", "last_error"]) set(k + f, i[f]);
        }
      }
    });
  }
})();
