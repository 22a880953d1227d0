// TIML web pages: calls to the TIML REST API and small rendering helpers (no libraries, works offline).
"use strict";

const TIML = (() => {
  // The REST prefix: ?rest= in the page's URL, else the server's timl-config.js (window.TIML_REST, which may be
  // "" for a root prefix), else /api.
  const params = new URLSearchParams(window.location.search);
  const rest = (params.get("rest") ?? window.TIML_REST ?? "/api").replace(/\/$/, "");
  if (params.get("rest")) {  // keep the REST prefix when moving between the pages
    document.querySelectorAll("nav a").forEach((link) => {
      const url = new URL(link.href, window.location.href);
      url.searchParams.set("rest", params.get("rest"));
      link.href = url.toString();
    });
  }

  // API tokens (when the server's configuration names API_TOKENS_FILE, timl-config.js sets TIML_TOKENS): every
  // REST call carries "Authorization: Bearer TOKEN". The token is asked for once and kept for the browser
  // session (sessionStorage: gone when the tab closes); a refused token is forgotten and asked for again.
  const TOKEN_KEY = "timl.token";
  function askToken(message) {
    const token = (window.prompt(message) || "").trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    return token;
  }

  async function call(url, options = {}, retry = true) {
    const headers = new Headers(options.headers || {});
    let token = sessionStorage.getItem(TOKEN_KEY);
    if (window.TIML_TOKENS && !token) token = askToken("This TIML server needs your access token:");
    if (token) headers.set("Authorization", `Bearer ${token}`);
    const response = await fetch(url, { ...options, headers });
    if (response.status === 401 && retry) {
      sessionStorage.removeItem(TOKEN_KEY);
      if (askToken("The server did not accept the token. Your access token:")) return call(url, options, false);
    }
    return response;
  }

  async function json(response) {
    let body = {};
    try { body = await response.json(); } catch (error) { body = { error: `HTTP ${response.status}` }; }
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  function form(file) {
    const data = new FormData();
    data.append("file", file, file.name || "image");
    return data;
  }

  return {
    rest,
    call,
    info: () => call(`${rest}/info`).then(json),
    classify: (file) => call(`${rest}/classify`, { method: "POST", body: form(file) }).then(json),
    explain: (file, method, layer, query = {}) => {
      const search = new URLSearchParams(query).toString();
      const url = `${rest}/explain/${encodeURIComponent(method)}/${encodeURIComponent(layer || "-")}${search ? "?" + search : ""}`;
      return call(url, { method: "POST", body: form(file) }).then(json);
    },
    get: (path) => call(`${rest}${path}`).then(json),
    post: (path, body) => call(`${rest}${path}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).then(json),

    /** Draws one labelled bar per class; the top class is highlighted. */
    renderBars(container, classes, probabilities) {
      container.replaceChildren();
      const top = probabilities.indexOf(Math.max(...probabilities));
      classes.forEach((name, index) => {
        const percent = (100 * probabilities[index]).toFixed(1);
        const bar = document.createElement("div");
        bar.className = "bar" + (index === top ? " top" : "");
        bar.setAttribute("role", "meter");
        bar.setAttribute("aria-label", `${name}: ${percent} percent`);
        bar.setAttribute("aria-valuenow", percent);
        bar.setAttribute("aria-valuemin", "0");
        bar.setAttribute("aria-valuemax", "100");
        bar.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="value"></span>`;
        bar.querySelector(".name").textContent = name;
        bar.querySelector(".fill").style.width = `${percent}%`;
        bar.querySelector(".value").textContent = `${percent} %`;
        container.appendChild(bar);
      });
    },

    /** Whether an explanation method of /info explains an inner layer (the Grad-CAM family) or the input. */
    usesLayer: (info, method) => Boolean(info.explainers?.[method]?.uses_layer),

    /** The query a page sends with an explanation: masking methods run 500 seeded masks, fast enough to wait for. */
    explainQuery: (info, method) => ("num_masks" in (info.explainers?.[method]?.params || {}) ? { masks: 500, seed: 0 } : {}),

    /** Fills the method and layer selects from /info. */
    fillChoices(info, methodSelect, layerSelect) {
      methodSelect.replaceChildren(...info.explain_methods.map((m) => new Option(m, m)));
      layerSelect.replaceChildren(...info.layers.map((l) => new Option(l, l, l === info.default_layer, l === info.default_layer)));
    },

    showImage(img, file) {
      if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
      img.dataset.url = URL.createObjectURL(file);
      img.src = img.dataset.url;
      img.hidden = false;
    },

    png: (base64) => `data:image/png;base64,${base64}`,

    /** Wires a drop zone and a file input to a callback receiving the chosen File. */
    onFile(dropZone, input, callback) {
      input.addEventListener("change", () => input.files[0] && callback(input.files[0]));
      if (!dropZone) return;
      ["dragenter", "dragover"].forEach((type) => dropZone.addEventListener(type, (event) => {
        event.preventDefault(); dropZone.classList.add("over");
      }));
      ["dragleave", "drop"].forEach((type) => dropZone.addEventListener(type, (event) => {
        event.preventDefault(); dropZone.classList.remove("over");
      }));
      dropZone.addEventListener("drop", (event) => event.dataTransfer.files[0] && callback(event.dataTransfer.files[0]));
    },
  };
})();

/** The classify pages (desktop and touch share this). */
function classifyPage() {
  const $ = (id) => document.getElementById(id);
  let current = null;
  let generation = 0; // answers for an earlier image are dropped when a newer image was chosen meanwhile
  const status = (text, error = false) => { $("status").textContent = text; $("status").className = error ? "status error" : "status"; };

  TIML.info().then((answer) => {
    info = answer;
    TIML.fillChoices(info, $("method"), $("layer"));
    $("model").textContent = `${info.model} · ${info.classes.length} classes · ${info.input_size} px`;
  }).catch((error) => status(`Cannot reach the model: ${error.message}`, true));

  let info = null;
  $("method").addEventListener("change", () => {
    $("layer").disabled = !(info && TIML.usesLayer(info, $("method").value));
  });

  async function classify(file) {
    current = file;
    const mine = ++generation;
    TIML.showImage($("preview"), file);
    $("explainButton").disabled = true;
    $("heatmap").hidden = $("composite").hidden = true;
    status("Classifying…");
    try {
      const answer = await TIML.classify(file);
      if (mine !== generation) return;
      TIML.renderBars($("bars"), answer.classes, answer.prediction);
      $("predicted").textContent = answer.predicted_class;
      $("explainButton").disabled = false;
      status(`Classified ${answer.filename}.`);
    } catch (error) {
      if (mine !== generation) return;
      $("bars").replaceChildren(); $("predicted").textContent = "–";
      status(error.message, true);
    }
  }

  TIML.onFile($("drop"), $("file"), classify);
  $("explainButton").addEventListener("click", async () => {
    if (!current) return;
    $("explainButton").disabled = true;
    status(`Explaining with ${$("method").value}…`);
    const mine = generation;
    try {
      const answer = await TIML.explain(current, $("method").value, $("layer").value, TIML.explainQuery(info, $("method").value));
      if (mine !== generation) return;
      $("heatmap").src = TIML.png(answer.heatmap);
      $("composite").src = TIML.png(answer.comp);
      $("heatmap").hidden = $("composite").hidden = false;
      status(`${answer.method} on ${answer.layer} for class ${answer.class_name ?? answer.class_index} (score ${answer.score.toFixed(3)}).`);
    } catch (error) {
      status(error.message, true);
    } finally {
      $("explainButton").disabled = false;
    }
  });
}
