/* tuneplan page: enhances the server-rendered form.
 *
 * - every change of the form re-estimates through POST /api/charts (debounced, the previous request aborted)
 *   and swaps in the result fragments and the Plotly figures; no full reload;
 * - the URL follows the form (history.replaceState), so a link reproduces the page;
 * - the model field searches the catalog (GET /api/models?q=) as you type and estimates as soon as the text is a
 *   catalog model (or, after a pause, a complete Hub id);
 * - a dropped or chosen config.json is read here and sent inline as `config` (base64url JSON in the URL);
 * - the advisor's "Apply" buttons put a lever's plan changes into the form;
 * - a bad value is marked on its field (aria-invalid) with the range it must be in;
 * - "Which GPU to rent" (POST /api/rent), the export buttons (POST /api/export/{format}) and the rule-of-thumb
 *   card (GET /api/rule-of-thumb) ask the server; the page computes no figure itself;
 * - "Verify with a real run" asks the server what the run would take (POST /api/jobs/preflight), posts the plan to
 *   /api/jobs, polls the job every 2 s with its phase and elapsed time, and shows measured vs estimated.
 * Vanilla JS, no build step.
 */
(function () {
  "use strict";

  var form = document.getElementById("plan-form");
  if (!form) return;
  var results = document.getElementById("results");
  var errorBox = document.getElementById("error");
  var FRAGMENTS = ["summary", "advice", "notes", "serving", "timecost", "storage", "fits", "sticky"];
  var CHARTS = ["memory", "seq_len", "batch_size", "storage", "objectives"];
  // the plan's fields (name, kind, default, label, bounds), derived on the server from estimator.Plan
  var FIELDS = JSON.parse(document.getElementById("plan-fields").textContent);
  var ORDER = FIELDS.map(function (f) { return f.name; });
  var KIND = {};
  var FIELD = {};
  FIELDS.forEach(function (f) { KIND[f.name] = f.kind; FIELD[f.name] = f; });
  var GIB = 1073741824;

  var state = { timer: 0, controller: null, updates: 0, last: null, figures: null, config: null };
  window.tuneplan = state;

  // ---------------------------------------------------------------- form <-> plan <-> URL

  function customGpu() {
    var name = document.getElementById("gpu-custom-name");
    var memory = document.getElementById("gpu-custom-memory");
    var n = name ? name.value.trim() : "";
    var m = memory ? Number(memory.value) : NaN;
    if (!n || !(m >= 1 && m <= 16384)) return null;
    return n + ":" + m + "GiB";
  }

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
    if (KIND[name] === "gpu" && node && node.value === "custom") return customGpu() || "";
    return node ? node.value.trim() : "";
  }

  function setField(name, value) {
    if (KIND[name] === "bool") {
      var box = document.getElementById(name);
      if (box) box.checked = !!value;
      return;
    }
    if (name === "method") {
      var radio = document.getElementById("method-" + value);
      if (radio) radio.checked = true;
      return;
    }
    var node = document.getElementById(name);
    if (!node) return;
    node.value = Array.isArray(value) ? value.join(",") : (value === null ? "" : String(value));
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

  // ---------------------------------------------------------------- bad values: said on the field, with the range

  function number(n) { return Number(n).toLocaleString("en-US"); }

  function rangeText(f) {
    if (f.low === null || f.high === null) return "";
    var lo = f.low_open ? "above " + number(f.low) : "from " + number(f.low);
    var hi = f.high_open ? "below " + number(f.high) : "to " + number(f.high);
    return lo + " " + hi;
  }

  function invalidMessage(input) {
    var f = FIELD[input.name] || {};
    var label = f.label || input.name;
    var what = f.kind === "int" ? "a whole number" : "a number";
    var range = rangeText(f);
    return label + ": enter " + what + (range ? " " + range : "") + (input.value ? " (got " + input.value + ")" : "") + ".";
  }

  function invalidField() {
    var inputs = form.querySelectorAll("input[type=number][name]");
    for (var i = 0; i < inputs.length; i++) {
      var input = inputs[i];
      var shown = input.offsetParent !== null;  // fields of other methods are hidden by the stylesheet
      if (shown && (!input.value || !input.checkValidity())) return { node: input, message: invalidMessage(input) };
    }
    var gpu = document.getElementById("gpu");
    if (gpu && gpu.value === "custom" && !customGpu()) {
      return { node: document.getElementById("gpu-custom-memory"),
               message: "GPU: give your card's name and its memory in GiB (from 1 to 16,384)." };
    }
    if (!fieldValue("config") && !fieldValue("model")) {
      return { node: document.getElementById("model"), message: "Model: type a catalog model or a Hub id (org/name), or drop a config.json." };
    }
    return null;
  }

  function clearMarks() {
    form.querySelectorAll("[aria-invalid=true]").forEach(function (node) {
      node.removeAttribute("aria-invalid");
      var msg = document.getElementById(node.id + "-live-error");
      if (msg) msg.remove();
      node.setAttribute("aria-describedby", (node.getAttribute("aria-describedby") || "").replace(node.id + "-live-error", "").trim());
    });
  }

  function markField(node, message) {
    if (!node) return;
    node.setAttribute("aria-invalid", "true");
    if (!message || document.getElementById(node.id + "-live-error")) return;
    var p = document.createElement("p");
    p.className = "field-error";
    p.id = node.id + "-live-error";
    p.textContent = message;
    (node.closest(".field, .check") || node.parentNode).appendChild(p);
    node.setAttribute("aria-describedby", ((node.getAttribute("aria-describedby") || "") + " " + p.id).trim());
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
    clearMarks();
    var bad = invalidField();
    if (bad) {
      markField(bad.node, bad.message);
      showError({ detail: bad.message });
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

  function applyAdjustments(data) {
    // defaults the estimator changed for this model (seq_len beyond its context, dropout on MoE experts): the form
    // and the URL follow, so what is shown is what was estimated
    (data.adjusted || []).forEach(function (a) { setField(a.field, a.to); });
    if ((data.adjusted || []).length) history.replaceState(null, "", "?" + queryString(formValues()));
  }

  function render(data) {
    errorBox.textContent = "";
    results.classList.remove("stale");
    FRAGMENTS.forEach(function (name) {
      var node = document.getElementById(name);
      if (node && data.html && name in data.html) node.innerHTML = data.html[name];
    });
    applyAdjustments(data);
    document.title = titleFor(data);
    state.last = data;
    drawCharts(data.charts);
    flashSticky();
    state.updates += 1;
    document.body.dataset.updates = String(state.updates);
    refreshRent();
    preflight();
  }

  function flashSticky() {
    var sticky = document.getElementById("sticky");
    if (!sticky) return;
    sticky.classList.remove("flash");
    void sticky.offsetWidth;  // restart the animation
    sticky.classList.add("flash");
  }

  function titleFor(data) {
    var labels = { full: "Full", lora: "LoRA", qlora: "QLoRA", compare: "Full vs LoRA vs QLoRA" };
    return labels[data.method] + " · " + data.model_label + " · tuneplan";
  }

  function suggestionButtons(ids, lead) {
    var s = document.createElement("p");
    s.appendChild(document.createTextNode(lead));
    ids.forEach(function (id, i) {
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
      if (i < ids.length - 1) s.appendChild(document.createTextNode(", "));
    });
    s.appendChild(document.createTextNode("?"));
    return s;
  }

  function turnOnButtons(fields) {
    // a message about a switch that is off (allow_long_context) comes with a button that turns it on
    var out = [];
    (fields || []).forEach(function (name) {
      if (KIND[name] !== "bool" || fieldValue(name)) return;
      var b = document.createElement("button");
      b.type = "button";
      b.className = "secondary";
      b.dataset.turnOn = name;
      b.textContent = "Turn on: " + FIELD[name].label;
      b.addEventListener("click", function () { setField(name, true); schedule(0); });
      out.push(b);
    });
    return out;
  }

  function showError(data) {
    var detail = (data && (data.message || data.detail));
    if (Array.isArray(detail)) {
      detail = detail.map(function (d) { return (d.loc ? d.loc.slice(1).join(".") + ": " : "") + d.msg; }).join("; ");
    }
    errorBox.innerHTML = "";
    var p = document.createElement("p");
    p.textContent = String(detail || "something went wrong");
    errorBox.appendChild(p);
    var fields = (data && data.fields) || [];
    (data && data.errors || []).forEach(function (e) { if (e.field) fields.push(String(e.field).split(".")[0]); });
    fields.forEach(function (name) {
      var node = KIND[name] === "bool" || name === "method" ? null : document.getElementById(name);
      markField(node, null);
    });
    var buttons = turnOnButtons(fields);
    if (buttons.length) {
      var row = document.createElement("p");
      buttons.forEach(function (b) { row.appendChild(b); });
      errorBox.appendChild(row);
    }
    if (data && data.suggestions && data.suggestions.length) {
      errorBox.appendChild(suggestionButtons(data.suggestions, "Catalog models of the same family or close to it: "));
    }
    results.classList.add("stale");
    document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1);
  }

  // ---------------------------------------------------------------- the advisor's levers

  document.getElementById("advice").addEventListener("click", function (e) {
    var button = e.target && e.target.closest ? e.target.closest("button.apply") : null;
    if (!button) return;
    var changes = JSON.parse(button.dataset.changes || "{}");
    Object.keys(changes).forEach(function (name) { setField(name, changes[name]); });
    document.getElementById("summary").scrollIntoView({ block: "nearest" });
    schedule(0);
  });

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
  var hubTimer = 0;
  var searchController = null;
  var HUB_ID = /^[\w.-]+\/[\w.-]{2,}$/;

  function searchModels(q) {
    if (searchController) searchController.abort();
    searchController = new AbortController();
    fetch("/api/models?q=" + encodeURIComponent(q), { signal: searchController.signal, headers: { Accept: "application/json" } })
      .then(function (res) { return res.ok ? res.json() : null; })
      .then(function (data) {
        if (!data) return;
        var items = Array.isArray(data) ? data : [];
        modelList.innerHTML = "";
        items.slice(0, 20).forEach(function (m) {
          var opt = document.createElement("option");
          opt.value = m.id || m.hf_id;
          opt.textContent = (m.name || m.id) + (m.hf_id && m.hf_id !== m.id ? " — " + m.hf_id : "");
          modelList.appendChild(opt);
        });
        // the text is a catalog model (its id or its Hub id): estimate now
        var typed = document.getElementById("model").value.trim().toLowerCase();
        var exact = items.some(function (m) {
          return String(m.id).toLowerCase() === typed || String(m.hf_id).toLowerCase() === typed;
        });
        if (exact) { clearTimeout(hubTimer); schedule(0); }
      })
      .catch(function () { /* the datalist keeps its options */ });
  }

  // ---------------------------------------------------------------- which GPU to rent (/api/rent)

  var rent = { button: document.getElementById("rent-show"), out: document.getElementById("rent-result"), open: false };

  function hours(s) { return s >= 3600 ? (s / 3600).toFixed(1) + " h" : (s / 60).toFixed(1) + " min"; }

  function fmtGib(n) {
    if (n === null || n === undefined) return "—";
    return Math.abs(n) >= GIB ? (n / GIB).toFixed(2) + " GiB" : (n / 1048576).toFixed(1) + " MiB";
  }

  function renderRent(data) {
    rent.out.innerHTML = "";
    var byRun = data.sorted_by === "run_usd";
    var table = document.createElement("table");
    table.className = "storage-table rent-table";
    table.appendChild(cell("caption", data.options.length + " of " + data.checked + " GPU × count options fit " +
      (data.model || "the plan") + (byRun ? ", cheapest for " + number(data.run_tokens) + " tokens first" : ", cheapest per million tokens first")));
    var head = document.createElement("tr");
    ["GPU", "×", "per GPU", "tokens/s", byRun ? "run" : "per M tokens"].forEach(function (t, i) {
      var th = cell("th", t, i ? "num" : "");
      th.scope = "col";
      head.appendChild(th);
    });
    table.appendChild(document.createElement("thead")).appendChild(head);
    var body = table.appendChild(document.createElement("tbody"));
    data.options.slice(0, 10).forEach(function (o) {
      var tr = body.appendChild(document.createElement("tr"));
      tr.dataset.gpu = o.gpu;
      var option = document.querySelector('#gpu option[value="' + o.gpu + '"]');  // the card's name, as the form lists it
      var th = tr.appendChild(cell("th", option ? option.textContent.split(" · ")[0].trim() : o.gpu));
      th.scope = "row";
      tr.appendChild(cell("td", String(o.num_gpus), "num"));
      tr.appendChild(cell("td", fmtGib(o.per_gpu_bytes), "num"));
      tr.appendChild(cell("td", number(Math.round(o.tokens_per_s)), "num"));
      var c = o.cheapest;
      var cost = !c ? "no price" : byRun ? "$" + c.run_usd.toFixed(2) + " (" + hours(o.run_s) + ")" : "$" + c.usd_per_million_tokens.toFixed(3);
      tr.appendChild(cell("td", cost, "num"));
    });
    rent.out.appendChild(table);
    rent.out.appendChild(cell("p", "Prices: " + data.prices + ". Each row is this plan estimated on that GPU and count.", "hint"));
  }

  function loadRent() {
    var bad = invalidField();
    if (bad) { rent.out.textContent = "Fix the form first."; return; }
    var plan = toPlan(formValues());
    if (plan.method === "compare") plan.method = "qlora";
    rent.out.textContent = "Checking every GPU and count…";
    fetch("/api/rent", { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(plan) })
      .then(jsonAnswer).then(function (answer) {
        if (!answer.ok) { rent.out.textContent = detailText(answer.data); return; }
        renderRent(answer.data);
      }).catch(function () { rent.out.textContent = "Could not reach the server."; });
  }

  function refreshRent() { if (rent.open) loadRent(); }

  if (rent.button) {
    rent.button.addEventListener("click", function () { rent.open = true; loadRent(); });
  }

  // ---------------------------------------------------------------- exports (/api/export/{format})

  document.querySelectorAll("[data-export]").forEach(function (button) {
    button.addEventListener("click", function () {
      var status = document.getElementById("export-status");
      var plan = toPlan(formValues());
      if (plan.method === "compare") plan.method = "qlora";
      status.textContent = "Writing the " + button.textContent + " file…";
      fetch("/api/export/" + button.dataset.export, { method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(plan) })
        .then(jsonAnswer).then(function (answer) {
          if (!answer.ok) { status.textContent = "Could not export: " + detailText(answer.data); return; }
          var blob = new Blob([answer.data.text], { type: answer.data.media_type || "text/plain" });
          var link = document.createElement("a");
          link.href = URL.createObjectURL(blob);
          link.download = answer.data.filename;
          document.body.appendChild(link);
          link.click();
          setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
          status.textContent = "Downloaded " + answer.data.filename +
            (answer.data.notes && answer.data.notes.length ? ": " + answer.data.notes.join("; ") : ".");
          status.dataset.filename = answer.data.filename;
        }).catch(function () { status.textContent = "Could not reach the server."; });
    });
  });

  // ---------------------------------------------------------------- the rule of thumb for any size

  var ruleInput = document.getElementById("rule-params");
  var ruleTimer = 0;

  function parseCount(text) {
    var m = String(text).trim().replace(/[,_\s]/g, "").match(/^(\d+(?:\.\d+)?(?:e\d+)?)([kmbt]?)$/i);
    if (!m) return NaN;
    var scale = { "": 1, k: 1e3, m: 1e6, b: 1e9, t: 1e12 }[m[2].toLowerCase()];
    return Math.round(Number(m[1]) * scale);
  }

  function gb(n) { return n >= 1e9 ? (n / 1e9).toFixed(1) + " GB" : n >= 1e6 ? (n / 1e6).toFixed(1) + " MB" : (n / 1e3).toFixed(1) + " kB"; }

  function updateRule() {
    var n = parseCount(ruleInput.value);
    clearMarks();
    if (!(n >= 1 && n <= 1e15)) {
      markField(ruleInput, "Parameters: a count from 1 to 10^15, like 10e9 or 7.6B.");
      return;
    }
    fetch("/api/rule-of-thumb?params=" + n, { headers: { Accept: "application/json" } })
      .then(jsonAnswer).then(function (answer) {
        if (!answer.ok) return;
        ["fp16", "int4", "adapter", "qlora_total"].forEach(function (key) {
          var node = document.querySelector('[data-rule="' + key + '"]');
          if (node) { node.textContent = gb(answer.data[key]); node.dataset.bytes = String(answer.data[key]); }
        });
        document.getElementById("rule-figures").dataset.params = String(answer.data.params);
      });
  }

  if (ruleInput) {
    ruleInput.addEventListener("input", function () { clearTimeout(ruleTimer); ruleTimer = setTimeout(updateRule, 250); });
  }

  // ---------------------------------------------------------------- verify with a real run (/api/jobs)

  var verify = {
    box: document.getElementById("verify"),
    button: document.getElementById("verify-run"),
    cancel: document.getElementById("verify-cancel"),
    status: document.getElementById("verify-status"),
    plan: document.getElementById("verify-plan"),
    out: document.getElementById("verify-result"),
    token: document.getElementById("verify-token"),  // only when the server has an API token
    enabled: false,
    job: null,
    timer: 0,
    preflightTimer: 0,
    busy: false,
    blocked: ""
  };
  verify.enabled = !!(verify.box && verify.box.dataset.enabled === "true");
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
  var PHASES = { starting: "starting Python and torch", building: "building the model", "warm-up": "warm-up step",
    measuring: "measured step", tracking: "tracked step", writing: "writing the result" };

  function detailText(data) {
    var detail = data && (data.message || data.detail);
    if (Array.isArray(detail)) detail = detail.map(function (d) { return d.msg || String(d); }).join("; ");
    return String(detail || "something went wrong");
  }

  function fmtError(p) {
    if (p === null || p === undefined) return "—";
    return (p > 0 ? "+" : p < 0 ? "−" : "±") + Math.abs(p).toFixed(2) + " %";
  }

  function duration(s) {
    if (s === null || s === undefined) return "";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function verifyBusy(busy) {
    verify.busy = busy;
    verify.button.disabled = busy || !!verify.blocked;
    verify.cancel.hidden = !busy;
    verify.box.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function jsonAnswer(res) {
    return res.json().catch(function () { return { detail: "the server answered " + res.status }; })
      .then(function (data) { return { ok: res.ok, status: res.status, data: data }; });
  }

  function verifyBody() {
    var body = toPlan(formValues());
    delete body.device;  // the run goes where the server has hardware (its verify_device); the estimate follows it
    return body;
  }

  function showPreflight(p) {
    // what the run would take, before it starts: device, host RAM, time; the button says no when it cannot run
    var where = p.device === "cpu"
      ? "This run goes to the CPU" + (p.gpu ? "" : " (this server has no GPU)")
      : "This run goes to the GPU (" + p.gpu + ")";
    var ram = "about " + fmtGib(p.host_bytes) + " of host memory" +
      (p.available_bytes ? " (" + fmtGib(p.available_bytes) + " available)" : "");
    var text = where + ": " + ram + (p.device === "cuda" ? ", " + fmtGib(p.estimate_bytes) + " of GPU memory" : "") +
      (p.time_s ? ", about " + duration(p.time_s) + " in all" : "") + ".";
    // the API's reason names its own switch (allow_oom), which the page does not offer: the page says what to change
    var reason = p.runs ? "" : p.reason.replace(/^this run is/, "it is").replace(/, or send "allow_oom".*$/, "")
      .replace(/\bbatch_size\b/, FIELD.batch_size.label.toLowerCase()).replace(/\bseq_len\b/, FIELD.seq_len.label.toLowerCase());
    verify.plan.textContent = p.runs ? text : where + ": it cannot start, " + reason + ".";
    verify.plan.className = "verify-plan" + (p.runs ? "" : " nofit");
    verify.blocked = p.runs ? "" : p.reason;
    verify.plan.dataset.hostBytes = String(p.host_bytes);
    verify.plan.dataset.device = p.device;
    verifyBusy(!!verify.busy);  // a run in progress keeps the button disabled
  }

  function preflight() {
    if (!verify.enabled || !verify.plan) return;
    clearTimeout(verify.preflightTimer);
    verify.preflightTimer = setTimeout(function () {
      var values = formValues();
      if (values.method === "compare") { verify.plan.textContent = "Pick Full, LoRA or QLoRA: a run verifies one method."; return; }
      if (invalidField()) return;
      if (verify.token && !verify.token.value.trim()) { verify.plan.textContent = "Enter this server's API token to see what a run would take."; return; }
      fetch("/api/jobs/preflight", { method: "POST", headers: jobHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify(verifyBody()) })
        .then(jsonAnswer).then(function (answer) {
          if (answer.ok) showPreflight(answer.data);
          else verify.plan.textContent = detailText(answer.data);
        }).catch(function () { /* the next change tries again */ });
    }, 200);
  }

  function startVerify() {
    var values = formValues();
    if (values.method === "compare") {
      verify.status.textContent = "Pick Full, LoRA or QLoRA: a run verifies one method.";
      return;
    }
    if (invalidField()) { verify.status.textContent = "Fix the form first: a run needs a valid plan."; return; }
    clearTimeout(verify.timer);
    verify.job = null;
    verify.out.innerHTML = "";
    verifyBusy(true);
    verify.status.textContent = "Starting the run…";
    if (verify.token && !verify.token.value.trim()) {
      verifyBusy(false);
      needToken("Enter this server's API token to start a run.");
      return;
    }
    fetch("/api/jobs", {
      method: "POST",
      headers: jobHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(verifyBody())
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

  function progressText(job, secs) {
    var p = job.progress;
    var phase = p && p.phase ? PHASES[p.phase] || p.phase : (job.status === "queued" ? "waiting in the queue" : "starting");
    var step = p && p.index ? " (" + p.index + " of " + p.count + ")" : "";
    return "Running on " + job.device + ": " + phase + step + ", " + duration(p && p.elapsed_s !== undefined ? p.elapsed_s : secs) + " elapsed";
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
            verify.status.textContent = progressText(job, secs);
            verify.status.dataset.phase = job.progress && job.progress.phase ? job.progress.phase : job.status;
            pollVerify(id, started, job.status);
            return;
          }
          verifyBusy(false);
          if (job.status === "done") {
            renderVerify(job);
            verify.status.textContent = "Done on " + job.device + " in " + duration(secs) +
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
    var cpu = job.device === "cpu";
    var table = document.createElement("table");
    table.className = "verify-table";
    table.dataset.job = job.id;
    table.appendChild(cell("caption", "Measured vs estimated on " + job.device + ": " + job.model + ", " +
      plan.method + ", batch " + plan.batch_size + " × seq " + plan.seq_len));
    var head = document.createElement("tr");
    ["Component", "Estimated for " + (cpu ? "the CPU" : "this GPU"), "Measured", "Error"].forEach(function (t, i) {
      var th = cell("th", t, i ? "num" : "");
      th.scope = "col";
      head.appendChild(th);
    });
    table.appendChild(document.createElement("thead")).appendChild(head);
    [cmp.components, cmp.tiers].forEach(function (rows, group) {
      var body = table.appendChild(document.createElement("tbody"));
      if (group) body.className = "tiers";
      rows.forEach(function (r) {
        // a tier the device does not have (the CPU has no allocator cache and no driver) is left out
        if (group && (r.measured === null || r.measured === undefined)) return;
        var tr = document.createElement("tr");
        tr.dataset.row = r.name;
        var th = cell("th", VERIFY_LABELS[r.name] || r.name);
        th.scope = "row";
        tr.appendChild(th);
        var est = tr.appendChild(cell("td", fmtGib(r.estimated), "num"));
        est.dataset.bytes = String(r.estimated);
        var meas = tr.appendChild(cell("td", fmtGib(r.measured), "num"));
        if (r.measured !== null && r.measured !== undefined) meas.dataset.bytes = String(r.measured);
        var err = tr.appendChild(cell("td", fmtError(r.error_percent), "num"));
        if (r.error_percent !== null && r.error_percent !== undefined) err.dataset.percent = String(r.error_percent);
        body.appendChild(tr);
      });
    });
    verify.out.innerHTML = "";
    verify.out.appendChild(table);
    verify.out.appendChild(cell("p", "Error = (estimated − measured) / measured. " + (cpu
      ? "The run went to the CPU, so it is held to the CPU estimate (live tensors only, no allocator cache or driver), not to the GPU figure in the headline."
      : "“—”: not measured on " + job.device + "."), "hint"));
  }

  if (verify.token) {
    verify.token.value = storedToken();
    verify.token.addEventListener("input", function () {
      try { window.sessionStorage.setItem(TOKEN_KEY, verify.token.value.trim()); } catch (e) { /* private mode */ }
      preflight();
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

  var gpuSelect = document.getElementById("gpu");
  var customBox = document.getElementById("gpu-custom");
  function showCustom() { if (customBox && gpuSelect) customBox.hidden = gpuSelect.value !== "custom"; }

  form.addEventListener("submit", function (e) { e.preventDefault(); schedule(0); });
  form.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.id === "config-file") return;
    if (t && t.id === "gpu") showCustom();
    if (t && t.id === "model") return;  // the input handler and the search decide
    schedule(t && t.type === "number" ? 150 : 0);
  });
  form.addEventListener("input", function (e) {
    var t = e.target;
    if (!t || t.type === "file" || t.type === "radio" || t.type === "checkbox" || t.tagName === "SELECT") return;
    if (t.id === "model") {
      // search as you type; estimate once the text is a catalog model (the search says so), or after a pause once
      // it is a complete Hub id (org/name): partial names do not go to the Hub
      var text = t.value.trim();
      clearTimeout(searchTimer);
      clearTimeout(hubTimer);
      searchTimer = setTimeout(function () { searchModels(text); }, 150);
      if (HUB_ID.test(text)) hubTimer = setTimeout(function () { schedule(0); }, 1000);
      return;
    }
    schedule(400);
  });
  document.getElementById("model").addEventListener("change", function () { clearTimeout(hubTimer); schedule(0); });

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

  showCustom();

  // the sticky result bar (phones) steps aside while the summary itself is in view
  var summaryCard = document.getElementById("summary");
  var stickyBar = document.getElementById("sticky");
  if (stickyBar && summaryCard && window.IntersectionObserver) {
    new IntersectionObserver(function (entries) {
      stickyBar.classList.toggle("quiet", entries[0].isIntersecting);
    }).observe(summaryCard);
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
    preflight();
  } else if (!errorBox.textContent.trim()) {
    schedule(0);
  }
  document.documentElement.classList.add("js");
})();
