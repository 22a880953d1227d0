// TIML web pages: calls to the TIML REST API and small rendering helpers (no libraries, works offline).
"use strict";

const TIML = (() => {
  // The REST prefix: ?rest= in the page's URL when it is a path on this server, else the server's timl-config.js
  // (window.TIML_REST, which may be "" for a root prefix), else /api. Any other ?rest= (another host, "//host",
  // a javascript: URL) is refused with a message on the page: the token, the images and the answers go to this
  // server only.
  const params = new URLSearchParams(window.location.search);
  const given = params.get("rest");
  const checked = given === null ? null : sameOriginPath(given === "" ? "/" : given);
  const rest = checked ?? (window.TIML_REST ?? "/api").replace(/\/$/, "");
  if (given !== null && checked === null) {
    refused(given);
  } else if (checked !== null) {  // keep the REST prefix when moving between the pages
    document.querySelectorAll("nav a").forEach((link) => {
      const url = new URL(link.getAttribute("href"), window.location.href);
      if (url.origin !== window.location.origin) return;
      url.searchParams.set("rest", checked || "/");
      link.href = url.toString();
    });
  }

  /** The prefix ``value`` names when it is a path on this server ("/api", "/v2/timl/"), without its trailing
   * slash ("" for "/"); null for anything else: another host ("https://x", "//x", "/\\x"), another scheme
   * ("javascript:..."), a path the browser would read as another host once normalised ("/.//x"). */
  function sameOriginPath(value) {
    if (!value.startsWith("/") || /^\/[\/\\]/.test(value)) return null;
    let url;
    try { url = new URL(value, window.location.origin); } catch (error) { return null; }
    if (url.origin !== window.location.origin || /^\/[\/\\]/.test(url.pathname)) return null;
    return url.pathname.replace(/\/$/, "");
  }

  /** Says on the page, in plain words, that the ?rest= parameter was refused and what is used instead. */
  function refused(value) {
    const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
    const message = document.createElement("p");
    message.id = "restRefused";
    message.className = "status error";
    message.setAttribute("role", "alert");
    message.textContent = `The address parameter rest=${shown} was refused: only a path on this server is accepted `
      + `(such as rest=/api). This page talks to this server's own REST API (${rest || "/"}) instead.`;
    (document.querySelector("main") || document.body).before(message);
  }

  /** The absolute URL of a REST path (e.g. "/info") under the prefix; an Error for anything not on this server
   * (no request, no link ever leaves it). */
  function apiUrl(path) {
    return sameOrigin(`${rest}${path}`);
  }

  /** ``address`` resolved against this page's server, as an absolute URL; an Error when it names another. */
  function sameOrigin(address) {
    const url = new URL(address, window.location.origin);
    if (url.origin !== window.location.origin) throw new Error(`Refused to contact another server: ${url.origin}`);
    return url.toString();
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
    const address = sameOrigin(url);  // before any token is asked for or sent
    const headers = new Headers(options.headers || {});
    let token = sessionStorage.getItem(TOKEN_KEY);
    if (window.TIML_TOKENS && !token) token = askToken("This TIML server needs your access token:");
    if (token) headers.set("Authorization", `Bearer ${token}`);
    const response = await fetch(address, { ...options, headers });
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

  /** The parts of an image viewer (see viewer()): the image, the heatmap over it, its caption and controls,
   * the zoom dialog. */
  const VIEWER_MARKUP = `
    <div class="stack">
      <img data-part="image" class="preview" alt="" hidden>
      <img data-part="heatmap" class="overlay" alt="Heatmap of the explanation over the image" hidden>
    </div>
    <figcaption data-part="caption"></figcaption>
    <div data-part="controls" class="controls" hidden>
      <div class="scale" role="img" aria-label="Colour scale: blue parts weighed least, red parts most"><span>weighed least</span><span class="gradient"></span><span>most</span></div>
      <label>Heatmap opacity <input data-part="opacity" type="range" min="0" max="100" value="50"></label>
    </div>
    <button data-part="zoomButton" type="button" class="secondary" hidden>Zoom</button>
    <dialog data-part="zoom" class="zoom" aria-label="The image, full size">
      <div class="stack"><img data-part="zoomImage" alt="The image, full size"><img data-part="zoomHeatmap" class="overlay" alt="" hidden></div>
      <button data-part="zoomClose" type="button">Close</button>
    </dialog>`;
  /** The panels of the classify pages (desktop and tablet), by the id of the empty <section> each fills (see
   * panel()): the classification (#predicted, #bars, #status) and the explanation's settings (#method,
   * #explainButton, #layer in #layerField, #masks in #masksField), which classifyPage() wires. */
  const PANEL_MARKUP = {
    results: `
      <h2 id="result-title">Classification</h2>
      <p class="prediction">Most likely: <strong id="predicted">–</strong></p>
      <div id="bars" class="bars" aria-live="polite"></div>
      <p id="status" class="status" role="status"></p>`,
    explain: `
      <h2 id="explain-title">Why? Explanation</h2>
      <label>Method <select id="method"></select></label>
      <button id="explainButton" type="button" disabled>Explain</button>
      <details class="advanced">
        <summary>Advanced settings</summary>
        <label id="layerField">Network layer explained <select id="layer"></select></label>
        <label id="masksField" hidden>Random masks (more: finer, slower) <input id="masks" type="number" min="50" max="20000" step="50" value="500"></label>
      </details>`,
  };
  let methodTitles = {};  // the methods' names for people, from /info (the explainer registry)
  const ACCEPTED = { "image/jpeg": 1, "image/png": 1, "image/bmp": 1, "image/tiff": 1, "application/dicom": 1 };
  const SUFFIXES = /\.(jpe?g|png|bmp|tiff?|dcm)$/i;

  return {
    rest,
    url: apiUrl,
    call,
    info: () => call(apiUrl("/info")).then(json).then((answer) => {
      methodTitles = Object.fromEntries(Object.entries(answer.explainers || {}).map(([name, spec]) => [name, spec.title || name]));
      return answer;
    }),
    classify: (file) => call(apiUrl("/classify"), { method: "POST", body: form(file) }).then(json),
    explain: (file, method, layer, query = {}) => {
      const search = new URLSearchParams(query).toString();
      const url = apiUrl(`/explain/${encodeURIComponent(method)}/${encodeURIComponent(layer || "-")}${search ? "?" + search : ""}`);
      return call(url, { method: "POST", body: form(file) }).then(json);
    },
    get: (path) => call(apiUrl(path)).then(json),
    post: (path, body) => call(apiUrl(path), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).then(json),

    methodName: (method) => methodTitles[method] || method,

    /** The model as the header shows it: name, version and date (never a server path). */
    modelLabel: (info) => `Model: ${info.model_info?.label || "unnamed"} · ${info.classes.length} classes`,

    /** Writes the model header: its label and, for a registered version, a link to its model card
     * (GET <rest>/model_card?format=md, fetched with the API token when the server needs one). */
    showModel(element, info) {
      element.textContent = TIML.modelLabel(info);
      if (!info.model_info?.version) return;
      const link = document.createElement("a");
      link.href = apiUrl("/model_card?format=md");  // checked: a URL on this server
      link.target = "_blank";
      link.rel = "noopener";
      link.dataset.part = "modelCard";
      link.textContent = "model card";
      link.addEventListener("click", async (event) => {
        if (!window.TIML_TOKENS) return;
        event.preventDefault();
        const response = await TIML.call(link.href);
        if (!response.ok) { link.textContent = `model card: HTTP ${response.status}`; return; }
        window.open(URL.createObjectURL(await response.blob()), "_blank", "noopener");
      });
      element.append(" · ", link);
    },

    /** A plain-language reason why a file cannot be sent, checked before uploading; null when it can. */
    checkFile(file, info) {
      if (!file) return "No file was chosen.";
      if (!(ACCEPTED[file.type] || SUFFIXES.test(file.name))) {
        return `"${file.name}" is not an image TIML can read. Please choose a JPEG, PNG, BMP, TIFF or DICOM image.`;
      }
      const limit = info?.max_upload_mb;
      if (limit && file.size > limit * 1024 * 1024) {
        return `"${file.name}" is ${(file.size / 1048576).toFixed(1)} MB; the server accepts images up to ${limit} MB.`;
      }
      if (file.size === 0) return `"${file.name}" is empty.`;
      return null;
    },

    /** Draws one labelled bar per class, highest probability first; the top class is highlighted. */
    renderBars(container, classes, probabilities) {
      container.replaceChildren();
      const order = classes.map((name, index) => index).sort((a, b) => probabilities[b] - probabilities[a]);
      order.forEach((index, rank) => {
        const name = classes[index];
        const percent = (100 * probabilities[index]).toFixed(1);
        const bar = document.createElement("div");
        bar.className = "bar" + (rank === 0 ? " top" : "");
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

    /** The query a page sends with an explanation: masking methods run 500 seeded masks, fast enough to wait
     * for (the advanced "masks" field overrides); only the heatmap, at the size the page shows. */
    explainQuery(info, method, size, masks) {
      const query = { images: "heatmap", size: String(size) };
      if ("num_masks" in (info.explainers?.[method]?.params || {})) Object.assign(query, { masks: String(masks || 500), seed: "0" });
      return query;
    },

    /** Fills the method and layer selects from /info. */
    fillChoices(info, methodSelect, layerSelect) {
      methodSelect.replaceChildren(...info.explain_methods.map((m) => new Option(methodTitles[m] || m, m)));
      if (layerSelect) layerSelect.replaceChildren(...info.layers.map((l) => new Option(l, l, l === info.default_layer, l === info.default_layer)));
    },

    /** The pixel size an explanation is asked for: what the viewer shows, on this screen. */
    displaySize: (element) => Math.min(2048, Math.max(128, Math.round((element?.clientWidth || 480) * (window.devicePixelRatio || 1)))),

    /** Shows a chosen file in an image element. A DICOM or TIFF file, which no browser (or not every one) draws,
     * is shown as the PNG the server decodes from it (POST <rest>/preview); nothing shows if it cannot. */
    showImage(img, file) {
      TIML.clearImage(img);
      const drawnByServer = /\.(dcm|tiff?)$/i.test(file.name || "") || ["application/dicom", "image/tiff"].includes(file.type);
      if (!drawnByServer) { TIML.setImage(img, file); return; }
      const ticket = img.dataset.ticket;  // a later file (or clear) changes it: this preview is then dropped
      call(apiUrl(`/preview?size=${TIML.displaySize(img)}`), { method: "POST", body: form(file) })
        .then((response) => (response.ok ? response.blob() : null))
        .then((png) => { if (png && img.dataset.ticket === ticket) TIML.setImage(img, png); })
        .catch(() => {});  // no preview; the classification says what went wrong with the file
    },

    /** Shows a Blob (a browser-drawable file or a PNG) in an image element. */
    setImage(img, blob) {
      img.dataset.url = URL.createObjectURL(blob);
      img.src = img.dataset.url;
      img.hidden = false;
    },

    /** Empties an image element (no stale picture, no broken-image placeholder, no preview still to come). */
    clearImage(img) {
      img.dataset.ticket = String(Number(img.dataset.ticket || 0) + 1);
      if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
      delete img.dataset.url;
      img.removeAttribute("src");
      img.hidden = true;
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

    /** Fills an empty <section id="results"> or <section id="explain"> of a classify page with its panel. */
    panel(root) {
      root.innerHTML = PANEL_MARKUP[root.id];  // one markup for the desktop and the tablet page
    },

    /**
     * The image viewer of the pages: the image, the explanation's heatmap over it (opacity slider, colour scale),
     * and a zoom dialog. Every result carries the name of the image it belongs to; clear() removes all of it.
     */
    viewer(root) {
      root.innerHTML = VIEWER_MARKUP;  // one markup for every page; the image's alt text from data-alt
      const part = (name) => root.querySelector(`[data-part="${name}"]`);
      part("image").alt = root.dataset.alt || "The image";
      const image = part("image"), heatmap = part("heatmap"), caption = part("caption"), controls = part("controls");
      const opacity = part("opacity"), zoom = part("zoom"), zoomImage = part("zoomImage"), zoomHeatmap = part("zoomHeatmap");
      const apply = () => { heatmap.style.opacity = zoomHeatmap.style.opacity = String(opacity.value / 100); };
      opacity.addEventListener("input", apply);
      apply();
      part("zoomButton").addEventListener("click", () => {
        zoomImage.src = image.src;  // at least twice the size shown on the page, else the file's own size
        const width = Math.max(image.naturalWidth || 0, 2 * (image.clientWidth || 0));
        zoomImage.style.width = zoomHeatmap.style.width = `${width}px`;
        zoomHeatmap.hidden = heatmap.hidden;
        if (!heatmap.hidden) zoomHeatmap.src = heatmap.src;
        zoom.showModal();
      });
      part("zoomClose").addEventListener("click", () => zoom.close());
      image.addEventListener("click", () => image.src && part("zoomButton").click());
      const self = {
        imageName: "",
        show(source, name) {  // a File, or a URL of an image the server has
          self.clear();
          self.imageName = name;
          if (source instanceof Blob) TIML.showImage(image, source); else { image.src = source; image.hidden = false; }
          image.dataset.image = name;
          part("zoomButton").hidden = false;
          caption.textContent = name;
        },
        explanation(answer, name, methodLabel) {
          if (name !== self.imageName) return;  // an answer for an image no longer shown
          heatmap.src = TIML.png(answer.heatmap);
          heatmap.dataset.image = name;
          heatmap.hidden = false;
          controls.hidden = false;
          caption.textContent = `${name} · ${methodLabel} explanation of "${answer.class_name}"`;
        },
        clearExplanation() {
          heatmap.removeAttribute("src"); heatmap.hidden = true; delete heatmap.dataset.image;
          controls.hidden = true;
          caption.textContent = self.imageName;
        },
        clear() {
          self.clearExplanation();
          TIML.clearImage(image); delete image.dataset.image;
          self.imageName = ""; caption.textContent = "";
          part("zoomButton").hidden = true;
          if (zoom.open) zoom.close();
        },
      };
      return self;
    },
  };
})();

/** The classify pages (desktop and tablet share this). */
function classifyPage() {
  const $ = (id) => document.getElementById(id);
  const touch = document.body.classList.contains("touch");
  TIML.panel($("results")); TIML.panel($("explain"));
  const viewer = TIML.viewer($("viewer"));
  let current = null, info = null;
  let generation = 0; // answers for an earlier image are dropped when a newer image was chosen meanwhile
  const status = (text, error = false) => { $("status").textContent = text; $("status").className = error ? "status error" : "status"; };

  function clearResults() {
    $("bars").replaceChildren(); $("predicted").textContent = "–";
    $("results").dataset.image = "";
    viewer.clearExplanation();
    $("explainButton").disabled = true;
  }

  TIML.info().then((answer) => {
    info = answer;
    TIML.fillChoices(info, $("method"), $("layer"));
    TIML.showModel($("model"), info);
    updateAdvanced();
  }).catch((error) => status(`Cannot reach the model: ${error.message}`, true));

  function updateAdvanced() {
    const method = $("method").value;
    $("layerField").hidden = !(info && TIML.usesLayer(info, method));
    $("masksField").hidden = !(info && "num_masks" in (info.explainers?.[method]?.params || {}));
  }
  $("method").addEventListener("change", updateAdvanced);

  async function classify(file) {
    const mine = ++generation;
    current = null;
    clearResults();
    viewer.clear();
    const problem = TIML.checkFile(file, info);
    if (problem) { status(problem, true); return; }
    current = file;
    viewer.show(file, file.name);
    status(`Classifying ${file.name}…`);
    try {
      const answer = await TIML.classify(file);
      if (mine !== generation) return;
      TIML.renderBars($("bars"), answer.classes, answer.prediction);
      $("predicted").textContent = answer.predicted_class;
      $("results").dataset.image = file.name;
      $("explainButton").disabled = false;
      status(`Classified ${file.name}.`);
      if (touch) $("results").scrollIntoView({ block: "start" });
    } catch (error) {
      if (mine !== generation) return;
      clearResults();
      viewer.clear();  // nothing of a file the server refused stays on screen
      current = null;
      status(`${file.name}: ${error.message}`, true);
    }
  }

  TIML.onFile($("drop"), $("file"), classify);
  $("explainButton").addEventListener("click", async () => {
    if (!current) return;
    const file = current, mine = generation, method = $("method").value;
    const label = TIML.methodName(method);
    $("explainButton").disabled = true;
    viewer.clearExplanation();
    status(`Explaining ${file.name} with ${label}…`);
    try {
      const query = TIML.explainQuery(info, method, TIML.displaySize($("viewer")), $("masks").value);
      const answer = await TIML.explain(file, method, TIML.usesLayer(info, method) ? $("layer").value : "-", query);
      if (mine !== generation) return;
      viewer.explanation(answer, file.name, label);
      status(`${label} explanation of "${answer.class_name}" for ${file.name}: red areas weighed most.`);
      if (touch) $("viewer").scrollIntoView({ block: "start" });
    } catch (error) {
      if (mine === generation) status(error.message, true);
    } finally {
      if (mine === generation) $("explainButton").disabled = false;
    }
  });
}

/** The expert review page: resume where this reviewer stopped, go back, skip, change an answer. */
function reviewPage() {
  const $ = (id) => document.getElementById(id);
  const viewer = TIML.viewer($("viewer"));
  const status = (text, error = false) => { $("status").textContent = text; $("status").className = error ? "status error" : "status"; };
  let info = null, names = [], answers = {}, position = 0, analysis = null, generation = 0, reviewer = "";

  $("evaluator").value = localStorage.getItem("timl.reviewer") || "";
  $("download").href = TIML.url("/evaluate/answers.csv");  // checked: a URL on this server
  $("download").addEventListener("click", async (event) => {  // fetched with the API token, if the server needs one
    if (!window.TIML_TOKENS) return;
    event.preventDefault();
    const response = await TIML.call(TIML.url("/evaluate/answers.csv"));
    if (!response.ok) { status(`Cannot download the answers (HTTP ${response.status}).`, true); return; }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = "timl_evaluations.csv";
    link.click();
    URL.revokeObjectURL(link.href);
  });

  const stateOf = (name) => (!answers[name] ? "to do" : answers[name].skipped ? "skipped" : "done");
  const counts = () => names.reduce((c, name) => { c[stateOf(name)] += 1; return c; }, { "to do": 0, skipped: 0, done: 0 });

  function renderQueue() {
    $("queue").replaceChildren(...names.map((name, index) => {
      const item = document.createElement("li");
      item.className = stateOf(name).replace(" ", "-");
      const button = document.createElement("button");
      button.type = "button";
      button.innerHTML = `<span class="name"></span><span class="state"></span>`;
      button.querySelector(".name").textContent = `${index + 1}. ${name}`;
      button.querySelector(".state").textContent = stateOf(name) === "done" ? "✓ done" : stateOf(name);
      if (index === position) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => show(index));
      item.appendChild(button);
      return item;
    }));
    const c = counts();
    $("progress").textContent = `${c.done} answered, ${c.skipped} skipped, ${c["to do"]} to do (of ${names.length}).`;
  }

  function clearImage() {
    viewer.clear();
    $("bars").replaceChildren(); $("predicted").textContent = "–";
    ["agreeYes", "agreeNo"].forEach((id) => { $(id).checked = false; });
    $("label").value = ""; $("comment").value = "";
    $("submit").disabled = true;
    analysis = null;
  }

  async function start() {
    reviewer = $("evaluator").value.trim();
    if (!reviewer) { status("Please enter your name first: your answers are kept under it.", true); $("evaluator").focus(); return; }
    if (!info) return;
    localStorage.setItem("timl.reviewer", reviewer);
    status("Loading your earlier answers…");
    try {
      names = (await TIML.get("/evaluate/images")).images;
      const mine = await TIML.get(`/evaluate/answers?reviewer=${encodeURIComponent(reviewer)}`);
      answers = Object.fromEntries(mine.answers.filter((a) => names.includes(a.image)).map((a) => [a.image, a]));
    } catch (error) { status(error.message, true); return; }
    if (!names.length) { status("The review folder holds no images.", true); return; }
    $("workspace").hidden = false;
    const next = names.findIndex((name) => !answers[name]);
    if (next < 0) { position = 0; renderQueue(); finish(); return; }
    show(next);
  }

  async function show(index) {
    const mine = ++generation;
    position = index;
    $("summary").hidden = true;
    clearImage();
    renderQueue();
    const name = names[index];
    $("imageName").textContent = `Image ${index + 1} of ${names.length}: ${name}`;
    status(`Classifying and explaining ${name}…`);
    try {
      const response = await TIML.call(TIML.url(`/evaluate/images/${encodeURIComponent(name)}`));
      if (!response.ok) throw new Error(`Cannot load ${name} (HTTP ${response.status}).`);
      const blob = await response.blob();
      if (mine !== generation) return;
      viewer.show(blob, name);
      const method = $("method").value || info.default_method;
      const query = new URLSearchParams(TIML.explainQuery(info, method, TIML.displaySize($("viewer")))).toString();
      const answer = await TIML.get(`/evaluate/images/${encodeURIComponent(name)}/analysis?method=${encodeURIComponent(method)}&${query}`);
      if (mine !== generation) return;
      analysis = answer;
      TIML.renderBars($("bars"), answer.classes, answer.prediction);
      $("predicted").textContent = answer.predicted_class;
      viewer.explanation(answer.explanation, name, TIML.methodName(method));
      const earlier = answers[name];
      if (earlier && !earlier.skipped) {
        $(earlier.agree ? "agreeYes" : "agreeNo").checked = true;
        $("label").value = earlier.agree ? "" : earlier.label;
        $("comment").value = earlier.comment || "";
        status(`You answered this image on ${earlier.updated}; change your answer and save, or go on.`);
      } else {
        status(earlier ? "You skipped this image before." : "");
      }
      $("submit").disabled = false;
    } catch (error) {
      if (mine === generation) { clearImage(); status(error.message, true); }
    }
  }

  function finish() {
    const c = counts();
    $("summary").hidden = false;
    $("summaryText").textContent = c["to do"] === 0
      ? `All ${names.length} images have your answer: ${c.done} answered, ${c.skipped} skipped.`
      : `${c.done} answered, ${c.skipped} skipped, ${c["to do"]} still to do.`;
    $("reviewSkipped").hidden = c.skipped === 0;
    $("summary").scrollIntoView({ block: "start" });
  }

  function advance() {
    const after = names.findIndex((name, index) => index > position && !answers[name]);
    const any = names.findIndex((name) => !answers[name]);
    const next = after >= 0 ? after : any;
    if (next >= 0) show(next); else { renderQueue(); finish(); }
  }

  async function save(skipped) {
    const name = names[position];
    const agree = $("agreeYes").checked ? true : $("agreeNo").checked ? false : null;
    if (!skipped && agree === null) { status("Please choose Agree or Disagree.", true); return; }
    if (!skipped && !agree && !$("label").value) { status("You disagree: please choose the correct class.", true); $("label").focus(); return; }
    const predicted = analysis?.predicted_class || "";
    const confidence = analysis ? Math.max(...analysis.prediction) : null;
    try {
      const stored = await TIML.post("/evaluate/answers", {
        image: name, evaluator: reviewer, agree: skipped ? false : agree, skipped,
        label: skipped ? "" : (agree ? predicted : $("label").value), predicted, confidence,
        method: analysis?.explanation?.method || "", comment: $("comment").value,
      });
      answers[name] = { ...stored, image: name };
      const verdict = skipped ? "skipped" : agree ? `agree (${predicted})` : `disagree: ${$("label").value}`;
      $("saved").textContent = `Saved: ${name} — ${verdict}, at ${stored.updated}.`;
      advance();
    } catch (error) { status(error.message, true); }
  }

  (async () => {
    try {
      info = await TIML.info();
    } catch (error) { status(`Cannot reach the model: ${error.message}`, true); return; }
    TIML.showModel($("model"), info);
    $("label").replaceChildren(new Option("(choose when you disagree)", ""), ...info.classes.map((c) => new Option(c, c)));
    TIML.fillChoices(info, $("method"), null);
    $("method").value = info.default_method || info.explain_methods[0];
    try {
      const listed = (await TIML.get("/evaluate/images")).images;
      $("progress").textContent = `${listed.length} images to review${listed.length ? "" : ": the review folder is empty"}.`;
    } catch (error) { status(error.message, true); return; }
    if ($("evaluator").value) start();  // a returning reviewer resumes at once
  })();

  $("start").addEventListener("click", start);
  $("evaluator").addEventListener("keydown", (event) => { if (event.key === "Enter") start(); });
  $("method").addEventListener("change", () => names.length && show(position));
  $("submit").addEventListener("click", () => save(false));
  $("skip").addEventListener("click", () => save(true));
  $("back").addEventListener("click", () => position > 0 && show(position - 1));
  $("reviewSkipped").addEventListener("click", () => {
    const skipped = names.findIndex((name) => answers[name]?.skipped);
    if (skipped >= 0) show(skipped);
  });
}
