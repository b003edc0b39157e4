/* tuneplan page: enhances the server-rendered form.
 *
 * - every change of the form re-estimates through POST /api/charts (debounced, the previous request aborted)
 *   and swaps in the result fragments and the Plotly figures; no full reload;
 * - the URL follows the form (history.replaceState), so a link reproduces the page;
 * - the model field searches the catalog (GET /api/models?q=) as you type;
 * - a dropped or chosen config.json is read here and sent inline as `config` (base64url JSON in the URL);
 * - the charts follow the light / dark colour scheme;
 * - "Verify with a real run" posts the plan to /api/jobs, polls the job every 2 s and shows measured vs estimated.
 * Vanilla JS, no build step.
 */
(function () {
  "use strict";

  var form = document.getElementById("plan-form");
  if (!form) return;
  var results = document.getElementById("results");
  var errorBox = document.getElementById("error");
  var FRAGMENTS = ["summary", "notes", "storage", "fits"];
  var CHARTS = ["memory", "seq_len", "batch_size", "storage"];
  // the plan's fields (name, kind, default), derived on the server from estimator.Plan
  var FIELDS = JSON.parse(document.getElementById("plan-fields").textContent);
  var ORDER = FIELDS.map(function (f) { return f.name; });
  var KIND = {};
  FIELDS.forEach(function (f) { KIND[f.name] = f.kind; });

  var state = { timer: 0, controller: null, updates: 0, last: null, figures: null };
  window.tuneplan = state;

  // ---------------------------------------------------------------- form <-> plan <-> URL

  function el(name) { return form.elements.namedItem(name); }

  function fieldValue(name) {
    if (KIND[name] === "bool") {
      var box = document.getElementById(name);
      return !!(box && box.checked);
    }
    if (name === "method") {
      var checked = form.querySelector('input[name="method"]:checked');
      return checked ? checked.value : "qlora";
    }
    var node = document.getElementById(name);
    return node ? node.value.trim() : "";
  }

  function formValues() {
    var values = {};
    ORDER.forEach(function (name) { values[name] = fieldValue(name); });
    return values;
  }

  function queryString(values) {
    var params = new URLSearchParams();
    ORDER.forEach(function (name) {
      var v = values[name];
      if (name === "config" && !v) return;
      if (name === "model" && values.config) return;
      params.append(name, typeof v === "boolean" ? (v ? "true" : "false") : String(v));
    });
    return params.toString();
  }

  function modules(text) {
    return String(text || "").split(/[\s,]+/).filter(Boolean);
  }

  // a "pair" field ("448x448", "448,448"): [height, width], null when empty, else the text for the server to refuse
  function pair(text) {
    var t = String(text || "").trim();
    if (!t) return null;
    var parts = t.toLowerCase().replace(/×/g, "x").split(/[x,\s]+/).filter(Boolean);
    if (parts.length === 2 && parts.every(function (p) { return /^\d{1,9}$/.test(p); })) {
      return [Number(parts[0]), Number(parts[1])];
    }
    return t;
  }

  function toPlan(values) {
    var plan = {};
    FIELDS.forEach(function (f) {
      var v = values[f.name];
      if (f.kind === "model" || f.kind === "config") return;
      if (f.kind === "int" || f.kind === "number") v = Number(v);
      else if (f.kind === "tristate") v = v === "" ? null : v === "true";
      else if (f.kind === "gpu") v = v || null;
      else if (f.kind === "pair") v = pair(v);
      else if (f.kind === "modules") v = modules(v);
      else if (f.kind === "targets") {
        var t = modules(v || "all-linear");
        v = (t.length === 0 || (t.length === 1 && t[0] === "all-linear")) ? "all-linear" : t;
      }
      plan[f.name] = v;
    });
    if (values.config) plan.config = state.config || decodeConfig(values.config);
    else plan.model = values.model;
    if (plan.method === "full") plan.use_dora = false;
    return plan;
  }

  function invalidField() {
    var inputs = form.querySelectorAll("input[type=number]");
    for (var i = 0; i < inputs.length; i++) {
      var input = inputs[i];
      var shown = input.offsetParent !== null;  // fields of other methods are hidden by the stylesheet
      if (shown && (!input.value || !input.checkValidity())) return input;
    }
    if (!fieldValue("config") && !fieldValue("model")) return document.getElementById("model");
    return null;
  }

  // ---------------------------------------------------------------- config.json (base64url JSON)

  function encodeConfig(obj) {
    var bytes = new TextEncoder().encode(JSON.stringify(obj));
    var bin = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeConfig(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  function configName(cfg) {
    return "config.json (" + (cfg._name_or_path || cfg.model_type || "model") + ")";
  }

  function useConfig(cfg) {
    state.config = cfg;
    document.getElementById("config").value = encodeConfig(cfg);
    document.getElementById("model").disabled = true;
    document.getElementById("config-status").textContent = "Using " + configName(cfg);
    document.getElementById("config-clear").hidden = false;
    schedule(0);
  }

  function clearConfig() {
    state.config = null;
    document.getElementById("config").value = "";
    document.getElementById("config-file").value = "";
    var model = document.getElementById("model");
    model.disabled = false;
    document.getElementById("config-status").textContent = "";
    document.getElementById("config-clear").hidden = true;
    model.focus();
    schedule(0);
  }

  function readConfigFile(file) {
    if (!file) return;
    if (file.size > 1024 * 1024) { showError({ detail: file.name + " is too large for a config.json" }); return; }
    var reader = new FileReader();
    reader.onload = function () {
      var cfg;
      try { cfg = JSON.parse(String(reader.result)); } catch (e) {
        showError({ detail: file.name + " is not valid JSON: " + e.message });
        return;
      }
      if (!cfg || typeof cfg !== "object" || Array.isArray(cfg)) {
        showError({ detail: file.name + " must hold a JSON object (a model's config.json)" });
        return;
      }
      useConfig(cfg);
    };
    reader.onerror = function () { showError({ detail: "could not read " + file.name }); };
    reader.readAsText(file);
  }

  // ---------------------------------------------------------------- estimating

  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(update, delay === undefined ? 300 : delay);
  }

  function update() {
    var values = formValues();
    form.dataset.method = values.method;
    form.parentNode.dataset.method = values.method;
    history.replaceState(null, "", "?" + queryString(values));
    var bad = invalidField();
    if (bad) {
      var label = form.querySelector('label[for="' + bad.id + '"]');
      showError({ detail: (label ? label.textContent.trim() : bad.name) + ": enter a valid value" });
      return;
    }
    if (state.controller) state.controller.abort();
    var controller = new AbortController();
    state.controller = controller;
    results.setAttribute("aria-busy", "true");
    fetch("/api/charts", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(toPlan(values)),
      signal: controller.signal
    }).then(function (res) {
      return res.json().catch(function () { return { detail: "the server answered " + res.status }; })
        .then(function (data) { return { ok: res.ok, data: data }; });
    }).then(function (answer) {
      if (controller !== state.controller) return;
      if (answer.ok) render(answer.data); else showError(answer.data);
    }).catch(function (err) {
      if (err && err.name === "AbortError") return;
      showError({ detail: "could not reach the server: " + (err && err.message ? err.message : err) });
    }).then(function () {
      if (controller === state.controller) results.setAttribute("aria-busy", "false");
    });
  }

  function render(data) {
    errorBox.textContent = "";
    results.classList.remove("stale");
    FRAGMENTS.forEach(function (name) {
      var node = document.getElementById(name);
      if (node && data.html && name in data.html) node.innerHTML = data.html[name];
    });
    document.title = titleFor(data);
    state.last = data;
    drawCharts(data.charts);
    state.updates += 1;
    document.body.dataset.updates = String(state.updates);
  }

  function titleFor(data) {
    var labels = { full: "Full", lora: "LoRA", qlora: "QLoRA", compare: "Full vs LoRA vs QLoRA" };
    return labels[data.method] + " · " + data.model_label + " · tuneplan";
  }

  function showError(data) {
    var detail = data && data.detail;
    if (Array.isArray(detail)) {
      detail = detail.map(function (d) { return (d.loc ? d.loc.slice(1).join(".") + ": " : "") + d.msg; }).join("; ");
    }
    errorBox.innerHTML = "";
    var p = document.createElement("p");
    p.textContent = String(detail || "something went wrong");
    errorBox.appendChild(p);
    if (data && data.suggestions && data.suggestions.length) {
      var s = document.createElement("p");
      s.appendChild(document.createTextNode("Did you mean "));
      data.suggestions.forEach(function (id, i) {
        var b = document.createElement("button");
        b.type = "button";
        b.className = "link-button";
        b.textContent = id;
        b.addEventListener("click", function () {
          if (state.config) clearConfig();
          document.getElementById("model").value = id;
          schedule(0);
        });
        s.appendChild(b);
        if (i < data.suggestions.length - 1) s.appendChild(document.createTextNode(", "));
      });
      s.appendChild(document.createTextNode("?"));
      errorBox.appendChild(s);
    }
    results.classList.add("stale");
    document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1);
  }

  // ---------------------------------------------------------------- charts

  function cssVar(name, fallback) {
    var v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  function themed(layout) {
    var fg = cssVar("--fg", "#1b1f24");
    var grid = cssVar("--grid", "rgba(128,128,128,0.25)");
    var narrow = window.matchMedia("(max-width: 640px)").matches;
    var out = JSON.parse(JSON.stringify(layout || {}));
    out.font = Object.assign({}, out.font, { color: fg });
    if (narrow) {
      out.font.size = 11;
      out.margin = Object.assign({}, out.margin, { l: 44, r: 8 });
      if (out.title && out.title.font) out.title.font.size = 13;
      if (out.legend && out.legend.orientation === "h") {
        // two legend entries a row, so the legend does not take the plot's height
        out.legend = Object.assign({}, out.legend, { entrywidth: 0.5, entrywidthmode: "fraction", font: { size: 10 } });
      }
    }
    ["xaxis", "yaxis"].forEach(function (axis) {
      out[axis] = Object.assign({}, out[axis], { gridcolor: grid, zerolinecolor: grid, linecolor: grid });
    });
    out.hoverlabel = Object.assign({}, out.hoverlabel, { bgcolor: cssVar("--card", "#fff"), font: { color: fg } });
    (out.annotations || []).forEach(function (a) {
      if (!a.font || !a.font.color) a.font = Object.assign({}, a.font, { color: fg });
    });
    out.autosize = true;
    return out;
  }

  var PLOT_CONFIG = { responsive: true, displaylogo: false, displayModeBar: false };

  function drawCharts(figures) {
    if (!figures) return;
    state.figures = figures;
    if (!window.Plotly) return;
    CHARTS.forEach(function (name) {
      var node = document.getElementById("chart-" + name);
      var fig = figures[name];
      if (!node || !fig) return;
      window.Plotly.react(node, fig.data, themed(fig.layout), PLOT_CONFIG);
    });
    if (document.body.dataset.charts !== "ready" && window.performance && performance.mark) {
      performance.mark("tuneplan:charts");
    }
    document.body.dataset.charts = "ready";
  }

  // ---------------------------------------------------------------- model type-ahead

  var modelList = document.getElementById("model-list");
  var searchTimer = 0;
  var searchController = null;

  function searchModels(q) {
    if (searchController) searchController.abort();
    searchController = new AbortController();
    fetch("/api/models?q=" + encodeURIComponent(q), { signal: searchController.signal, headers: { Accept: "application/json" } })
      .then(function (res) { return res.ok ? res.json() : null; })
      .then(function (data) {
        if (!data) return;
        var items = Array.isArray(data) ? data : (data.models || data.results || data.items || []);
        modelList.innerHTML = "";
        items.slice(0, 20).forEach(function (m) {
          var opt = document.createElement("option");
          opt.value = m.id || m.hf_id;
          opt.textContent = (m.name || m.id) + (m.hf_id && m.hf_id !== m.id ? " — " + m.hf_id : "");
          modelList.appendChild(opt);
        });
      })
      .catch(function () { /* the datalist keeps its options */ });
  }

  // ---------------------------------------------------------------- verify with a real run (/api/jobs)

  var verify = {
    box: document.getElementById("verify"),
    button: document.getElementById("verify-run"),
    cancel: document.getElementById("verify-cancel"),
    status: document.getElementById("verify-status"),
    out: document.getElementById("verify-result"),
    token: document.getElementById("verify-token"),  // only when the server has an API token
    job: null,
    timer: 0
  };
  var TOKEN_KEY = "tuneplan.apiToken";

  function storedToken() {
    try { return window.sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  // the server's API token, kept for this tab only, sent as Authorization: Bearer to the jobs API
  function jobHeaders(extra) {
    var headers = { Accept: "application/json" };
    Object.keys(extra || {}).forEach(function (k) { headers[k] = extra[k]; });
    var token = verify.token ? verify.token.value.trim() : "";
    if (token) headers.Authorization = "Bearer " + token;
    return headers;
  }

  function needToken(message) {
    verify.status.textContent = message;
    if (verify.token) verify.token.focus();
  }
  var VERIFY_POLL_MS = 2000;
  var VERIFY_LABELS = { weights: "Weights", adapters: "Adapters", gradients: "Gradients", optimizer: "Optimizer state",
    activations: "Activations", logits: "Logits", peak_allocated: "Peak allocated", peak_reserved: "Peak reserved",
    total: "Total (nvidia-smi)" };

  function detailText(data) {
    var detail = data && data.detail;
    if (Array.isArray(detail)) detail = detail.map(function (d) { return d.msg || String(d); }).join("; ");
    return String(detail || "something went wrong");
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "—";
    var gib = n / 1073741824;
    return Math.abs(gib) >= 1 ? gib.toFixed(2) + " GiB" : (n / 1048576).toFixed(2) + " MiB";
  }

  function fmtError(p) {
    if (p === null || p === undefined) return "—";
    return (p > 0 ? "+" : p < 0 ? "−" : "±") + Math.abs(p).toFixed(2) + " %";
  }

  function verifyBusy(busy) {
    verify.button.disabled = busy;
    verify.cancel.hidden = !busy;
    verify.box.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function jsonAnswer(res) {
    return res.json().catch(function () { return { detail: "the server answered " + res.status }; })
      .then(function (data) { return { ok: res.ok, status: res.status, data: data }; });
  }

  function startVerify() {
    var values = formValues();
    if (values.method === "compare") {
      verify.status.textContent = "Pick Full, LoRA or QLoRA: a run verifies one method.";
      return;
    }
    var bad = invalidField();
    if (bad) { verify.status.textContent = "Fix the form first: a run needs a valid plan."; return; }
    clearTimeout(verify.timer);
    verify.job = null;
    verify.out.innerHTML = "";
    verifyBusy(true);
    verify.status.textContent = "Starting the run…";
    var body = toPlan(values);
    delete body.device;  // the run goes where the server has hardware (its verify_device); the estimate follows it
    if (verify.token && !verify.token.value.trim()) {
      verifyBusy(false);
      needToken("Enter this server's API token to start a run.");
      return;
    }
    fetch("/api/jobs", {
      method: "POST",
      headers: jobHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(body)
    }).then(jsonAnswer).then(function (answer) {
      if (!answer.ok) {
        verifyBusy(false);
        if (answer.status === 401) { needToken("The server refused the API token: " + detailText(answer.data)); return; }
        verify.status.textContent = "Could not start the run: " + detailText(answer.data);
        return;
      }
      verify.job = answer.data;
      verify.status.textContent = "Queued (job " + answer.data.id + ")…";
      pollVerify(answer.data.id, Date.now(), "queued");
    }).catch(function (err) {
      verifyBusy(false);
      verify.status.textContent = "Could not reach the server: " + (err && err.message ? err.message : err);
    });
  }

  function pollVerify(id, started, last) {
    verify.timer = setTimeout(function () {
      fetch("/api/jobs/" + encodeURIComponent(id), { headers: jobHeaders() })
        .then(jsonAnswer).then(function (answer) {
          if (!verify.job || verify.job.id !== id) return;  // a newer run took over
          if (!answer.ok) {
            verifyBusy(false);
            verify.status.textContent = "Lost track of the run: " + detailText(answer.data);
            return;
          }
          var job = answer.data;
          var secs = Math.round((Date.now() - started) / 1000);
          if (job.status === "queued" || job.status === "running") {
            // the live region speaks on changes of state only, not on every poll
            if (job.status !== last) verify.status.textContent = "Running on " + job.device + "…";
            pollVerify(id, started, job.status);
            return;
          }
          verifyBusy(false);
          if (job.status === "done") {
            renderVerify(job);
            verify.status.textContent = "Done on " + job.device + " in " + secs + " s" +
              (job.comparison && job.comparison.oom ? ": the run ran out of memory (figures up to that point)." : ".");
          } else if (job.status === "cancelled") {
            verify.status.textContent = "The run was cancelled.";
          } else {
            verify.status.textContent = "The run failed: " + String(job.error || "no output").split("\n")[0];
            if (job.error && job.error.indexOf("\n") >= 0) {
              var details = document.createElement("details");
              var summary = document.createElement("summary");
              summary.textContent = "Output of the run";
              var pre = document.createElement("pre");
              pre.textContent = job.error;
              details.appendChild(summary);
              details.appendChild(pre);
              verify.out.appendChild(details);
            }
          }
        }).catch(function () {
          if (verify.job && verify.job.id === id) pollVerify(id, started, last);  // try again
        });
    }, VERIFY_POLL_MS);
  }

  function cell(tag, text, cls) {
    var node = document.createElement(tag);
    node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function renderVerify(job) {
    var cmp = job.comparison;
    if (!cmp) return;
    var plan = job.plan || {};
    var table = document.createElement("table");
    table.className = "verify-table";
    table.dataset.job = job.id;
    table.appendChild(cell("caption", "Measured vs estimated on " + job.device + ": " + job.model + ", " +
      plan.method + ", batch " + plan.batch_size + " × seq " + plan.seq_len));
    var head = document.createElement("tr");
    ["Component", "Estimated", "Measured", "Error"].forEach(function (t, i) {
      var th = cell("th", t, i ? "num" : "");
      th.scope = "col";
      head.appendChild(th);
    });
    table.appendChild(document.createElement("thead")).appendChild(head);
    [cmp.components, cmp.tiers].forEach(function (rows, group) {
      var body = table.appendChild(document.createElement("tbody"));
      if (group) body.className = "tiers";
      rows.forEach(function (r) {
        var tr = document.createElement("tr");
        tr.dataset.row = r.name;
        var th = cell("th", VERIFY_LABELS[r.name] || r.name);
        th.scope = "row";
        tr.appendChild(th);
        var est = tr.appendChild(cell("td", fmtBytes(r.estimated), "num"));
        est.dataset.bytes = String(r.estimated);
        var meas = tr.appendChild(cell("td", fmtBytes(r.measured), "num"));
        if (r.measured !== null && r.measured !== undefined) meas.dataset.bytes = String(r.measured);
        var err = tr.appendChild(cell("td", fmtError(r.error_percent), "num"));
        if (r.error_percent !== null && r.error_percent !== undefined) err.dataset.percent = String(r.error_percent);
        body.appendChild(tr);
      });
    });
    verify.out.innerHTML = "";
    verify.out.appendChild(table);
    verify.out.appendChild(cell("p", "Error = (estimated − measured) / measured. “—”: not measured on " + job.device +
      (job.device === "cpu" ? " (live tensors only; no allocator cache, no driver)." : "."), "hint"));
  }

  if (verify.token) {
    verify.token.value = storedToken();
    verify.token.addEventListener("input", function () {
      try { window.sessionStorage.setItem(TOKEN_KEY, verify.token.value.trim()); } catch (e) { /* private mode */ }
    });
  }

  if (verify.box && verify.button) {
    verify.box.hidden = false;
    verify.button.addEventListener("click", startVerify);
    verify.cancel.addEventListener("click", function () {
      if (!verify.job) return;
      verify.status.textContent = "Cancelling…";
      fetch("/api/jobs/" + encodeURIComponent(verify.job.id), { method: "DELETE", headers: jobHeaders() })
        .catch(function () { /* the next poll says what happened */ });
    });
  }

  // ---------------------------------------------------------------- wiring

  form.addEventListener("submit", function (e) { e.preventDefault(); schedule(0); });
  form.addEventListener("change", function (e) {
    if (e.target && e.target.id === "config-file") return;
    schedule(e.target && e.target.type === "number" ? 150 : 0);
  });
  form.addEventListener("input", function (e) {
    var t = e.target;
    if (!t || t.type === "file" || t.type === "radio" || t.type === "checkbox" || t.tagName === "SELECT") return;
    if (t.id === "model") {
      // search as you type; estimate only once the id is complete (a catalog pick, Enter, or leaving the
      // field), so partial names do not go to the Hub
      clearTimeout(searchTimer);
      searchTimer = setTimeout(function () { searchModels(t.value.trim()); }, 150);
      var picked = [].some.call(modelList.options, function (o) { return o.value === t.value.trim(); });
      if (picked) schedule(150);
      return;
    }
    schedule(400);
  });

  var fileInput = document.getElementById("config-file");
  fileInput.addEventListener("change", function () { readConfigFile(fileInput.files && fileInput.files[0]); });
  document.getElementById("config-clear").addEventListener("click", clearConfig);
  var zone = document.getElementById("dropzone");
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function () { zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    var file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    readConfigFile(file);
  });

  var copy = document.getElementById("copy-link");
  if (copy && navigator.clipboard) {
    copy.hidden = false;
    copy.addEventListener("click", function () {
      navigator.clipboard.writeText(location.href).then(function () {
        document.getElementById("copy-status").textContent = "Link copied";
      }, function () {
        document.getElementById("copy-status").textContent = "Copy the address bar to share this plan";
      });
    });
  }

  // the server fills the GPU list from the catalog; should it come without one, ask the API
  var gpuSelect = document.getElementById("gpu");
  if (gpuSelect && gpuSelect.options.length <= 1) {
    fetch("/api/gpus", { headers: { Accept: "application/json" } })
      .then(function (res) { return res.ok ? res.json() : []; })
      .then(function (gpus) {
        (Array.isArray(gpus) ? gpus : []).forEach(function (g) {
          var opt = document.createElement("option");
          opt.value = g.id;
          opt.textContent = g.name + " (" + (g.memory_bytes / 1073741824).toFixed(2) + " GiB)";
          gpuSelect.appendChild(opt);
        });
      })
      .catch(function () { /* "Any" stays the only choice */ });
  }

  var dark = window.matchMedia("(prefers-color-scheme: dark)");
  var redraw = function () { if (state.figures) drawCharts(state.figures); };
  if (dark.addEventListener) dark.addEventListener("change", redraw);
  window.matchMedia("(max-width: 640px)").addEventListener("change", redraw);

  var configInput = document.getElementById("config");
  if (configInput.value) {
    try { state.config = decodeConfig(configInput.value); } catch (e) { state.config = null; }
  }

  var initial = document.getElementById("initial-data");
  if (initial) {
    try {
      var data = JSON.parse(initial.textContent);
      drawCharts(data.charts);
    } catch (e) { /* the next update draws them */ }
    document.body.dataset.updates = "0";
  } else if (!errorBox.textContent.trim()) {
    schedule(0);
  }
  document.documentElement.classList.add("js");
})();
