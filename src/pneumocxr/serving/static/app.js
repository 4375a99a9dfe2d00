// pneumocxr web page: one image → POST /v1/explain → decision, probability, Grad-CAM overlay.
// No framework, no external asset (hospitals are offline). Untrusted text (API answers, the model
// card, file names) only ever reaches the page through textContent / createTextNode, never innerHTML.
"use strict";

(() => {
  // "Uncertain — refer": the calibrated probability lies within BAND of the threshold (the shaded
  // band on the bar), or the input has scope warnings (outside the intended population / equipment).
  // For a k-class model (argmax, no threshold): the top two classes are within BAND of each other.
  const BAND = 0.1;
  const KEY_STORAGE = "pneumocxr.apiKey";
  const DISPLAY_SIDE = 1024; // the server scales the PNGs to this long side (aspect kept)

  const $ = (id) => document.getElementById(id);
  let lastFile = null;

  function authHeaders() {
    const key = $("api-key").value.trim();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  // fetch → {ok, status, data}; a network failure becomes a readable message
  async function call(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      return { ok: false, status: 0, data: null, message: "cannot reach the server (" + err.message + ")" };
    }
    let data = null;
    if ((response.headers.get("content-type") || "").includes("application/json")) {
      try {
        data = await response.json();
      } catch (err) {
        data = null;
      }
    }
    let message = "";
    if (!response.ok) {
      const error = data && data.error;
      message = error && error.message ? error.message : "the server answered HTTP " + response.status;
      if (error && error.code) message += " [" + error.code + "]";
    }
    return { ok: response.ok, status: response.status, data: data, message: message };
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    box.hidden = !text;
  }

  // ---- analysing one file ----------------------------------------------------------------

  async function analyse(file) {
    if (!file) return;
    lastFile = file;
    $("analyse").disabled = true;
    $("clear").disabled = false;
    showError("");
    setStatus("Analysing " + file.name + " …");
    const form = new FormData();
    form.append("file", file, file.name);
    const url = "/v1/explain?layers=true&max_side=" + DISPLAY_SIDE;
    const answer = await call(url, { method: "POST", body: form, headers: authHeaders() });
    $("analyse").disabled = false;
    if (!answer.ok) {
      $("result").hidden = true;
      setStatus("");
      let text = "Could not analyse “" + file.name + "”: " + answer.message;
      if (answer.status === 401) text += ". Enter a valid API key above.";
      showError(text);
      return;
    }
    showResult(answer.data);
    setStatus("Analysed " + file.name + ": " + $("decision").textContent + ".");
  }

  function positiveView(d) {
    // binary: P(positive class) against the threshold; k classes: the decided class's probability
    const names = d.class_names;
    if (names.length === 2 && d.threshold !== null) {
      const name = names[1];
      const p = d.probabilities[name];
      return { name: name, p: p, threshold: d.threshold, near: Math.abs(p - d.threshold) <= BAND };
    }
    const sorted = names.map((n) => d.probabilities[n]).sort((a, b) => b - a);
    return { name: d.label, p: d.probabilities[d.label], threshold: null, near: sorted[0] - sorted[1] <= BAND };
  }

  function showResult(d) {
    const view = positiveView(d);
    const warnings = d.warnings || [];
    $("decision").textContent = d.label;
    const refer = view.near || warnings.length > 0;
    $("refer").hidden = !refer;
    const why = [];
    if (view.near && view.threshold !== null) why.push("the probability is within ±" + BAND.toFixed(2) + " of the threshold");
    if (view.near && view.threshold === null) why.push("the two most likely classes are within " + BAND.toFixed(2));
    if (warnings.length) why.push("the input is outside the model's intended use (see the warnings)");
    $("refer-why").textContent = refer ? "Uncertain — refer to a clinician: " + why.join("; ") + "." : "";
    $("refer-why").hidden = !refer;

    const pct = (x) => (100 * Math.min(1, Math.max(0, x))).toFixed(2) + "%";
    let text = "P(" + view.name + ") = " + view.p.toFixed(3);
    if (view.threshold !== null) {
      const lo = Math.max(0, view.threshold - BAND);
      const hi = Math.min(1, view.threshold + BAND);
      text += " — threshold " + view.threshold.toFixed(3) + " (" + d.threshold_rule + ")";
      text += "; uncertainty band " + lo.toFixed(2) + "–" + hi.toFixed(2);
      $("bar-threshold").hidden = false;
      $("bar-band").hidden = false;
      $("bar-threshold").style.left = pct(view.threshold);
      $("bar-band").style.left = pct(lo);
      $("bar-band").style.width = pct(hi - lo);
      $("bar-legend").textContent =
        "Bar: calibrated P(" + view.name + "). Line: the decision threshold. Shaded: threshold ± " +
        BAND.toFixed(2) + " — a probability inside it is reported as “uncertain — refer”.";
    } else {
      text += " (decided by the most likely class)";
      $("bar-threshold").hidden = true;
      $("bar-band").hidden = true;
      $("bar-legend").textContent = "Bar: probability of the decided class.";
    }
    $("probability-text").textContent = text;
    $("bar-fill").style.width = pct(view.p);
    $("bar-fill").classList.toggle("positive", d.decision === 1 && d.class_names.length === 2);

    const list = $("warnings");
    list.replaceChildren();
    for (const w of warnings) {
      const item = document.createElement("li");
      item.textContent = w.message + " (" + w.code + ")";
      list.appendChild(item);
    }
    $("warnings-box").hidden = warnings.length === 0;

    const ex = d.explanation;
    $("film").src = "data:image/png;base64," + d.film_png;
    $("heatmap").src = "data:image/png;base64," + d.heatmap_png;
    applyOpacity();
    let caption = "Grad-CAM (" + ex.method + ") of " + ex.target_class + ", the decided class; original image " +
      ex.image_size.width + " × " + ex.image_size.height + " px (" + d.input.format + ").";
    if (ex.map_empty) caption += " The map is empty: no positive evidence for this class at layer " + ex.layers[0] + ".";
    $("caption").textContent = caption;

    const details = [
      ["Request id", d.request_id],
      ["Model", d.model.name + (d.model.variant ? " (" + d.model.variant + ")" : "")],
      ["Model sha256", d.model.sha256 || "—"],
      ["Probabilities", d.class_names.map((n) => n + " " + d.probabilities[n].toFixed(3)).join(", ")],
      ["Input", d.input.format + ", " + d.input.width + " × " + d.input.height + " px, sha256 " + d.input.sha256.slice(0, 16) + "…"],
      ["Timings", "model " + d.timings_ms.model.toFixed(0) + " ms, total " + d.timings_ms.total.toFixed(0) + " ms"],
    ];
    if (d.spread !== null && d.spread !== undefined) details.push(["Members' spread (std)", d.spread.toFixed(3)]);
    const dl = $("details");
    dl.replaceChildren();
    for (const [term, value] of details) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dl.append(dt, dd);
    }
    $("result").hidden = false;
  }

  function applyOpacity() {
    const value = Number($("opacity").value);
    $("heatmap").style.opacity = String(value / 100);
    $("opacity-value").textContent = value + " %";
  }

  function clearAll() {
    lastFile = null;
    $("file").value = "";
    $("result").hidden = true;
    $("analyse").disabled = true;
    $("clear").disabled = true;
    showError("");
    setStatus("Cleared.");
  }

  // ---- the model and its card ------------------------------------------------------------

  async function loadModel() {
    const answer = await call("/v1/model", { headers: authHeaders() });
    const summary = $("model-summary");
    const card = $("card");
    card.replaceChildren();
    if (!answer.ok) {
      summary.textContent = answer.status === 401
        ? "Enter an API key to see which model answers and its model card."
        : "Model information is not available: " + answer.message;
      return;
    }
    const m = answer.data;
    const op = m.operating_point || {};
    let text = m.identity.name + " (" + m.task + "; classes " + m.class_names.join(", ") + ")";
    if (op.threshold !== null && op.threshold !== undefined) {
      text += "; threshold " + op.threshold.toFixed(3) + " (" + op.rule + ") on the calibrated probability";
    }
    if (m.identity.sha256) text += "; sha256 " + m.identity.sha256.slice(0, 12) + "…";
    summary.textContent = text + ". " + (m.intended_use || "");
    if (m.model_card) {
      renderMarkdown(m.model_card, card);
    } else {
      const p = document.createElement("p");
      p.textContent = "No model card was given for this model (start the server with --card FILE).";
      card.appendChild(p);
    }
  }

  // A small, safe Markdown subset for the model card: headings, paragraphs, lists, tables, quotes,
  // code blocks; inline `code`, **bold**, *emphasis*, [text](link) shown as text. DOM nodes only.
  function renderMarkdown(markdown, root) {
    const lines = markdown.replace(/\r\n?/g, "\n").split("\n");
    const isBlockStart = (line) => /^(#{1,6}\s|```|\s*\||\s*[-*]\s+|\s*\d+\.\s+|>)/.test(line);
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) {
        i++;
      } else if (line.startsWith("```")) {
        const code = [];
        for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
        i++;
        const pre = document.createElement("pre");
        pre.textContent = code.join("\n");
        root.appendChild(pre);
      } else if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
        const heading = document.createElement("h" + Math.min(6, m[1].length + 2));
        inline(heading, m[2]);
        root.appendChild(heading);
        i++;
      } else if (/^\s*\|/.test(line)) {
        const rows = [];
        for (; i < lines.length && /^\s*\|/.test(lines[i]); i++) {
          if (!/^\s*\|?[\s:|-]+\|?\s*$/.test(lines[i])) rows.push(lines[i]);
        }
        root.appendChild(table(rows));
      } else if (/^\s*([-*]|\d+\.)\s+/.test(line)) {
        const ordered = /^\s*\d+\./.test(line);
        const list = document.createElement(ordered ? "ol" : "ul");
        let item = null;
        for (; i < lines.length && lines[i].trim(); i++) {
          const start = /^\s*(?:[-*]|\d+\.)\s+(.*)$/.exec(lines[i]);
          if (start) {
            item = document.createElement("li");
            list.appendChild(item);
            inline(item, start[1]);
          } else {
            inline(item, " " + lines[i].trim());
          }
        }
        root.appendChild(list);
      } else if (line.startsWith(">")) {
        const quote = [];
        for (; i < lines.length && lines[i].startsWith(">"); i++) quote.push(lines[i].replace(/^>\s?/, ""));
        const block = document.createElement("blockquote");
        inline(block, quote.join(" "));
        root.appendChild(block);
      } else {
        const text = [];
        for (; i < lines.length && lines[i].trim() && !(text.length && isBlockStart(lines[i])); i++) {
          text.push(lines[i].trim());
        }
        const p = document.createElement("p");
        inline(p, text.join(" "));
        root.appendChild(p);
      }
    }
  }

  function table(rows) {
    const cells = (row) => row.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
    const element = document.createElement("table");
    rows.forEach((row, index) => {
      const tr = document.createElement("tr");
      for (const cell of cells(row)) {
        const td = document.createElement(index === 0 ? "th" : "td");
        inline(td, cell);
        tr.appendChild(td);
      }
      (index === 0 ? element.createTHead() : element.tBodies[0] || element.createTBody()).appendChild(tr);
    });
    return element;
  }

  function inline(parent, text) {
    const pattern = /(`[^`]+`|\*\*[^*]+\*\*|\*[^*\s][^*]*\*|\[[^\]]+\]\([^)\s]+\))/g;
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      const token = match[0];
      let node;
      if (token.startsWith("`")) {
        node = document.createElement("code");
        node.textContent = token.slice(1, -1);
      } else if (token.startsWith("**")) {
        node = document.createElement("strong");
        node.textContent = token.slice(2, -2);
      } else if (token.startsWith("*")) {
        node = document.createElement("em");
        node.textContent = token.slice(1, -1);
      } else {
        const link = /^\[([^\]]+)\]\(([^)]+)\)$/.exec(token);
        node = document.createTextNode(link[1] + " (" + link[2] + ")");
      }
      parent.appendChild(node);
      last = match.index + token.length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  // ---- wiring ------------------------------------------------------------------------------

  function init() {
    const key = $("api-key");
    key.value = sessionStorage.getItem(KEY_STORAGE) || "";
    key.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, key.value.trim()));
    key.addEventListener("change", loadModel);

    $("file").addEventListener("change", (event) => analyse(event.target.files[0]));
    $("analyse").addEventListener("click", () => analyse(lastFile));
    $("clear").addEventListener("click", clearAll);
    $("opacity").addEventListener("input", applyOpacity);

    const zone = $("drop-zone");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) analyse(file);
    });
    loadModel();
  }

  init();
})();
