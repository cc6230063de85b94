// The facejax page: sends dropped photos to the JSON API of the server
// that serves this page and shows what comes back. Nothing is fetched
// from anywhere else.
"use strict";

// Per-photo endpoints in the order their sections appear on a face.
const SECTIONS = [
  {endpoint: "analyze", title: "Analysis"},
  {endpoint: "age", title: "Age"},
  {endpoint: "age_edit", title: "Age edit"},
  {endpoint: "edit", title: "Attribute edits"},
  {endpoint: "caricature", title: "Caricatures"},
];
const IMAGE_SECTIONS = new Set(["age_edit", "edit", "caricature"]);
// What to give `launch.serve` for an endpoint that is not loaded.
const HOW_TO_LOAD = {
  analyze: "--workdir swinface=RUN or --weights swinface=FILE",
  age: "--workdir age_regressor=RUN, --workdir dex=RUN or --weights dex=FILE",
  age_edit: "--workdir age_transformer=RUN or --weights age_transformer=FILE",
  edit: "--workdir stargan=RUN or --weights stargan=FILE",
  caricature: "--workdir caricature=RUN",
  kinship: "--workdir kinship=RUN",
};
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
                "#42d4f4", "#f032e6", "#9a6324"];
const SVG_NS = "http://www.w3.org/2000/svg";

let loaded = {};  // endpoint -> its entry in GET /v1/models
let running = 0;  // requests in flight, for the page's status line

const $ = (id) => document.getElementById(id);

// A DOM element: el("div", {class: "x", "data-testid": "y"}, child, ...).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) {
      node.append(c instanceof Node ? c : document.createTextNode(c));
    }
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// The message of a failed response: {"detail": "..."} from the API,
// {"detail": [{loc, msg}, ...]} from request validation, else the status.
function errorMessage(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      // loc starts with "body"; the rest names the field.
      const where = (d.loc || []).filter((p) => p !== "body").join(".");
      return where ? `${where}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  return `the server answered HTTP ${status}`;
}

// POST JSON; resolves to the answer, rejects with an Error whose message
// is the server's (so every failure can be shown where it happened).
async function postJSON(path, payload) {
  running += 1;
  updateStatus();
  try {
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify(payload),
      });
    } catch (e) {
      throw new Error(`the server could not be reached (${e.message})`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;  // Not JSON (a proxy's error page, say).
    }
    if (!response.ok) throw new Error(errorMessage(response.status, body));
    if (body === null) throw new Error("the server's answer was not JSON");
    return body;
  } finally {
    running -= 1;
    updateStatus();
  }
}

function updateStatus() {
  $("photos-status").textContent = running
      ? `analysing\u2026 (${running} request${running > 1 ? "s" : ""} running)`
      : "";
  $("photos-status").classList.toggle("busy", running > 0);
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// ---- what is loaded ------------------------------------------------------

async function loadModels() {
  const box = $("models");
  try {
    const response = await fetch("/v1/models");
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(errorMessage(response.status, body));
    loaded = body.models || {};
  } catch (e) {
    box.textContent = "";
    $("models-error").textContent =
        `Cannot ask the server what is loaded: ${e.message}`;
    $("models-error").hidden = false;
    document.body.dataset.ready = "error";
    return;
  }
  box.textContent = "";
  for (const endpoint of [...SECTIONS.map((s) => s.endpoint), "kinship"]) {
    const m = loaded[endpoint];
    const chip = el("span", {
      class: m ? "chip on" : "chip off",
      "data-testid": m ? "model-loaded" : "model-missing",
      "data-endpoint": endpoint,
      title: m ? `${m.source} (step ${m.step})`
               : `not loaded: start the server with ${HOW_TO_LOAD[endpoint]}`,
    }, m ? `/v1/${endpoint}: ${m.name}` : `/v1/${endpoint}: not loaded`);
    if (m && m.step === 0) chip.append(el("em", {}, " (step 0)"));
    box.append(chip);
  }
  const missing = SECTIONS.filter((s) => !loaded[s.endpoint]);
  if (missing.length) {
    box.append(el("p", {class: "not-loaded", "data-testid": "not-loaded"},
        `Not loaded on this server: ${missing.map((s) => s.title).join(", ")}` +
        ". Those sections are left out; start the server with the model's " +
        "--workdir or --weights to add them."));
  }
  if (!SECTIONS.some((s) => loaded[s.endpoint])) {
    $("dropzone").classList.add("disabled");
    $("photo-input").disabled = true;
  }
  // Options only for loaded models.
  for (const opt of document.querySelectorAll(".option[data-endpoint]")) {
    opt.hidden = !loaded[opt.dataset.endpoint];
  }
  const targets = $("opt-targets");
  for (const t of (loaded.edit && loaded.edit.targets) || []) {
    targets.append(el("label", {class: "target"},
        el("input", {type: "checkbox", value: t, checked: true}),
        ` ${prettyTarget(t)}`));
  }
  if (!loaded.kinship) {
    $("kinship-missing").textContent = "Kinship is not loaded on this " +
        `server: start it with ${HOW_TO_LOAD.kinship}.`;
    $("kinship-missing").hidden = false;
    $("kinship-body").hidden = true;
  }
  document.body.dataset.ready = "true";  // For tests and scripts.
}

// "CelebA:Blond_Hair" -> "Blond Hair".
function prettyTarget(name) {
  return name.replace(/^[^:]*:/, "").replace(/_/g, " ");
}

// ---- options -------------------------------------------------------------

function parseAges(text) {
  // Numbers go as numbers; anything else as typed, so that the server's
  // validation says what is wrong with it.
  return text.split(/[\s,;]+/).filter((s) => s).map(
      (s) => (Number.isFinite(Number(s)) ? Number(s) : s));
}

function requestFor(endpoint, image) {
  const payload = {images: [image]};
  if (endpoint === "analyze") payload.embedding = false;
  if (endpoint === "age_edit") payload.ages = parseAges($("opt-ages").value);
  if (endpoint === "edit") {
    payload.targets = [...document.querySelectorAll(
        "#opt-targets input:checked")].map((c) => c.value);
  }
  if (endpoint === "caricature") {
    payload.direction = $("opt-direction").value;
    payload.styles = Number($("opt-styles").value);
    payload.seed = Number($("opt-seed").value);
  }
  return payload;
}

// ---- one photo -----------------------------------------------------------

// A photo's card; filled in as each endpoint answers. The endpoints are
// asked concurrently (the server batches them); the first answer with
// faces draws the boxes and the face cards, later answers fill sections.
class PhotoCard {
  constructor(name, dataUrl) {
    this.endpoints = SECTIONS.filter((s) => loaded[s.endpoint]);
    this.answers = {};  // endpoint -> the photo's result
    this.failures = new Map();  // message -> [section titles]
    this.faces = null;  // face cards: [{node, sections: {endpoint: node}}]
    // Boxes are drawn in photo pixels (the SVG's viewBox) and the SVG is
    // stretched over the <img>, so they follow its displayed size.
    this.overlay = svg("svg", {class: "boxes", "data-testid": "boxes",
                               preserveAspectRatio: "none"});
    this.img = el("img", {src: dataUrl, alt: name, "data-testid": "photo"});
    // A file the browser cannot show either: say so instead of an icon.
    this.img.addEventListener("error", () => {
      this.img.replaceWith(el("p", {class: "unreadable"},
                              "(the browser cannot display this file)"));
      this.overlay.remove();
    });
    this.status = el("p", {class: "status busy", "data-testid": "photo-status"},
                     "analysing\u2026");
    this.errors = el("div", {class: "error", "data-testid": "photo-error",
                             hidden: true});
    this.message = el("p", {class: "no-face", "data-testid": "no-face",
                            hidden: true});
    this.summary = el("p", {class: "face-count", "data-testid": "face-count",
                            hidden: true});
    this.faceList = el("div", {class: "faces"});
    this.node = el("article", {class: "photo", "data-testid": "photo-result",
                               "data-state": "running"},
        el("h3", {}, name),
        el("div", {class: "photo-row"},
           el("figure", {class: "photo-figure"}, this.img, this.overlay),
           el("div", {class: "photo-side"}, this.status, this.summary,
              this.message, this.errors)),
        this.faceList);
  }

  async run(dataUrl) {
    let done = 0;
    await Promise.all(this.endpoints.map(async ({endpoint, title}) => {
      try {
        const answer = await postJSON(`/v1/${endpoint}`,
                                      requestFor(endpoint, dataUrl));
        this.answered(endpoint, answer.results[0]);
      } catch (e) {
        this.failed(endpoint, title, e.message);
      }
      done += 1;
      this.status.textContent = done < this.endpoints.length
          ? `analysing\u2026 (${done} of ${this.endpoints.length} answered)`
          : "";
    }));
    this.status.classList.remove("busy");
    this.status.hidden = !this.status.textContent;
    this.node.dataset.state = "done";  // For tests and scripts.
  }

  answered(endpoint, result) {
    this.answers[endpoint] = result;
    if (this.faces === null) this.drawFaces(result);
    for (const face of this.faces) {
      const section = face.sections[endpoint];
      const data = result.faces[face.index];
      if (section && data) fillSection(endpoint, section, data);
    }
  }

  failed(endpoint, title, message) {
    if (!this.failures.has(message)) this.failures.set(message, []);
    const titles = this.failures.get(message);
    titles.push(title);
    // In the order the sections appear, whichever failed first.
    const order = SECTIONS.map((s) => s.title);
    titles.sort((a, b) => order.indexOf(a) - order.indexOf(b));
    this.errors.textContent = "";
    for (const [msg, titles] of this.failures) {
      this.errors.append(el("p", {}, el("strong", {}, `${titles.join(", ")}: `),
                            msg));
    }
    this.errors.hidden = false;
    for (const face of this.faces || []) {
      const section = face.sections[endpoint];
      if (section) showSectionError(section, message);
    }
  }

  drawFaces(result) {
    const {width, height, faces} = result;
    this.faces = [];
    this.overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
    if (!faces.length) {
      this.message.textContent = result.message || "no face found";
      this.message.hidden = false;
      return;
    }
    // Label and stroke sizes in photo pixels, so they look alike on any
    // photo once the SVG is scaled to the displayed image.
    this.summary.textContent = `${faces.length} face${faces.length > 1 ?
        "s" : ""} found in the ${width}×${height} photo`;
    this.summary.hidden = false;
    const unit = Math.max(width, height) / 100;
    faces.forEach((face, i) => {
      const color = COLORS[i % COLORS.length];
      const [x0, y0, x1, y1] = face.box;
      const group = svg("g", {"data-face": i + 1});
      group.append(svg("rect", {
        x: x0, y: y0, width: x1 - x0, height: y1 - y0, fill: "none",
        stroke: color, "stroke-width": Math.max(1.5, unit * 0.5),
        "data-testid": "face-box", "data-face": i + 1}));
      for (const [x, y] of face.landmarks || []) {
        group.append(svg("circle", {cx: x, cy: y, r: Math.max(1, unit * 0.6),
                                    fill: color, "data-testid": "landmark"}));
      }
      // The number on a tab above the box's corner (inside at the top).
      const size = Math.max(10, unit * 4);
      const top = Math.max(0, y0 - size * 1.2);
      const digits = String(i + 1).length;
      group.append(svg("rect", {x: x0, y: top, height: size * 1.2,
                                width: size * (0.6 * digits + 0.6),
                                fill: color}));
      const label = svg("text", {x: x0 + size * 0.3, y: top + size,
                                 fill: "#fff", "font-size": size,
                                 "font-weight": "bold"});
      label.textContent = String(i + 1);
      group.append(label);
      this.overlay.append(group);
      this.faces.push(this.faceCard(i, face, color));
    });
  }

  faceCard(index, face, color) {
    const sections = {};
    const node = el("div", {class: "face", "data-testid": "face",
                            "data-face": index + 1},
        el("h4", {style: `border-color: ${color}`},
           el("span", {class: "badge", style: `background: ${color}`},
              String(index + 1)),
           ` Face ${index + 1}`,
           el("span", {class: "detail"}, face.score === null ? ""
              : ` detector score ${face.score.toFixed(3)}`)));
    // Numbers on the left, images on the right.
    const facts = el("div", {class: "face-facts"});
    const images = el("div", {class: "face-images"});
    for (const {endpoint, title} of this.endpoints) {
      const body = el("div", {class: "section-body"},
                      el("p", {class: "pending"}, "analysing\u2026"));
      const section = el("div", {class: `section ${endpoint}`,
                                 "data-endpoint": endpoint},
                         el("h5", {}, title), body);
      sections[endpoint] = section;
      (IMAGE_SECTIONS.has(endpoint) ? images : facts).append(section);
    }
    node.append(el("div", {class: "face-body"}, facts, images));
    this.faceList.append(node);
    // Answers or failures that came before the faces were drawn.
    for (const {endpoint} of this.endpoints) {
      const r = this.answers[endpoint];
      if (r && r.faces[index]) fillSection(endpoint, sections[endpoint],
                                           r.faces[index]);
    }
    for (const [msg, titles] of this.failures) {
      for (const {endpoint, title} of this.endpoints) {
        if (titles.includes(title)) showSectionError(sections[endpoint], msg);
      }
    }
    return {index, node, sections};
  }
}

function showSectionError(section, message) {
  const body = section.querySelector(".section-body");
  body.textContent = "";
  body.append(el("p", {class: "error", "data-testid": "section-error"},
                 message));
}

// A labelled thumbnail.
function tile(src, label, title) {
  return el("figure", {class: "tile", title: title || label},
            el("img", {src, alt: label}), el("figcaption", {}, label));
}

function fillSection(endpoint, section, face) {
  const body = section.querySelector(".section-body");
  body.textContent = "";
  if (endpoint === "analyze") {
    const attrs = Object.entries(face.attributes || {})
        .filter(([, p]) => p > 0.5).sort((a, b) => b[1] - a[1]);
    const male = face.gender_male_probability;
    const expr = (face.expression_probabilities || {})[face.expression];
    body.append(el("dl", {class: "analysis", "data-testid": "analysis"},
        el("dt", {}, "Age"), el("dd", {"data-field": "age"},
                                `${face.age.toFixed(1)} years`),
        el("dt", {}, "Gender"), el("dd", {"data-field": "gender"},
            `${face.gender} (${((face.gender === "male" ? male : 1 - male) *
                                100).toFixed(0)}%)`),
        el("dt", {}, "Expression"), el("dd", {"data-field": "expression"},
            `${face.expression}` + (expr === undefined ? ""
                                    : ` (${(expr * 100).toFixed(0)}%)`)),
        el("dt", {}, "Attributes"), el("dd", {"data-field": "attributes"},
            attrs.length ? el("span", {class: "chips"}, ...attrs.map(([n, p]) =>
                el("span", {class: "chip"}, `${n.replace(/_/g, " ")} ` +
                                            `${(p * 100).toFixed(0)}%`)))
                         : "none above 50%")));
  } else if (endpoint === "age") {
    body.append(el("p", {class: "age", "data-testid": "age"},
        el("span", {class: "big"}, face.age.toFixed(1)), " years",
        el("span", {class: "detail"}, ` (${loaded.age.name})`)));
  } else if (endpoint === "age_edit") {
    body.append(el("div", {class: "strip", "data-testid": "age-edit-strip"},
        tile(face.input, "input", "the face as the model sees it"),
        ...face.edits.map((e) => tile(e.image, `${e.age} y`,
                                      `at ${e.age} years`))));
  } else if (endpoint === "edit") {
    body.append(el("div", {class: "strip", "data-testid": "attribute-edits"},
        tile(face.input, "input", "the face as the model sees it"),
        ...face.edits.map((e) => tile(e.image, prettyTarget(e.target),
                                      e.target))));
  } else if (endpoint === "caricature") {
    body.append(el("div", {class: "strip", "data-testid": "caricatures"},
        tile(face.input, "input", "the face as the model sees it"),
        ...face.edits.map((e) => tile(
            e.image, `style ${e.style + 1}`,
            `${face.direction}, style ${e.style + 1}`))));
  }
}

async function addPhotos(files) {
  const images = [...files];
  if (!images.length) return;
  $("clear").hidden = false;
  await Promise.all(images.map(async (file) => {
    let dataUrl;
    try {
      dataUrl = await readAsDataURL(file);
    } catch (e) {
      $("results").prepend(el("p", {class: "error"}, e.message));
      return;
    }
    const card = new PhotoCard(file.name, dataUrl);
    $("results").append(card.node);
    await card.run(dataUrl);
  }));
}

// ---- kinship -------------------------------------------------------------

const kin = {a: null, b: null};

async function pickKin(which, input) {
  const file = input.files[0];
  const preview = $(`kin-${which}-preview`);
  kin[which] = null;
  preview.hidden = true;
  if (file) {
    kin[which] = await readAsDataURL(file);
    preview.src = kin[which];
    preview.alt = file.name;
    preview.hidden = false;
  }
  $("kin-compare").disabled = !(kin.a && kin.b);
}

async function compareKin() {
  const result = $("kinship-result");
  const error = $("kinship-error");
  const status = $("kinship-status");
  result.hidden = true;
  error.hidden = true;
  status.textContent = "analysing\u2026";
  status.classList.add("busy");
  $("kin-compare").disabled = true;
  try {
    const answer = await postJSON("/v1/kinship", {images: [kin.a, kin.b]});
    const r = answer.results[0];
    result.textContent = "";
    if (r.kin === null || r.kin === undefined) {
      result.append(el("p", {class: "decision unknown",
                             "data-testid": "kinship-decision"},
                       r.message || "no decision"));
    } else {
      result.append(
          el("p", {class: `decision ${r.kin ? "kin" : "not-kin"}`,
                   "data-testid": "kinship-decision"},
             r.kin ? "KIN" : "NOT KIN"),
          el("dl", {},
             el("dt", {}, "Score"),
             el("dd", {"data-field": "score"}, r.score.toFixed(4)),
             el("dt", {}, "Threshold"),
             el("dd", {"data-field": "threshold"}, r.threshold.toFixed(4)),
             r.relation ? el("dt", {}, "Relation") : null,
             r.relation ? el("dd", {"data-field": "relation"}, r.relation)
                        : null),
          el("p", {class: "detail"},
             `${answer.model}; threshold from ${answer.threshold_source}`));
    }
    result.hidden = false;
  } catch (e) {
    error.textContent = `Kinship: ${e.message}`;
    error.hidden = false;
  } finally {
    status.textContent = "";
    status.classList.remove("busy");
    $("kin-compare").disabled = !(kin.a && kin.b);
  }
}

// ---- wiring --------------------------------------------------------------

function wire() {
  const zone = $("dropzone");
  const input = $("photo-input");
  input.addEventListener("change", () => {
    const files = [...input.files];
    input.value = "";  // The same file can be chosen again.
    addPhotos(files);
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    if (!input.disabled) addPhotos(e.dataTransfer.files);
  });
  // A photo dropped beside the zone should not replace the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("clear").addEventListener("click", () => {
    $("results").textContent = "";
    $("clear").hidden = true;
  });
  $("kin-a").addEventListener("change", (e) => pickKin("a", e.target));
  $("kin-b").addEventListener("change", (e) => pickKin("b", e.target));
  $("kin-compare").addEventListener("click", compareKin);
}

wire();
loadModels();
