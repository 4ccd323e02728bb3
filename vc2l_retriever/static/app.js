// The search page: plain JS, no libraries, nothing from the internet. Talks to the API of the server that
// served it (relative URLs) and builds every result with textContent, never innerHTML: stored text is data.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 10;           // hits per page ("More results" asks for the next offset)
const GROUP_PAGE = 5;      // documents per page when grouping
const SHOWN_CHARS = 600;   // text shown per card
const KEY_STORE = "vc2l-api-key";
const state = { image: null, offset: 0, groups: GROUP_PAGE, busy: false };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function apiKey() { return $("api-key").value.trim(); }

function headers(json) {
  const h = {};
  if (apiKey()) h.Authorization = "Bearer " + apiKey();
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, body) {
  const init = body === undefined ? { headers: headers(false) }
    : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
  const response = await fetch(path, init);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const answer = await response.json();
      if (answer.error && answer.error.message) message = answer.error.message;
    } catch (_) { /* not JSON: keep the status line */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function setStatus(message) { $("status").textContent = message; }

function askForKey() {
  $("key-box").open = true;
  $("api-key").focus();
  setStatus("This server needs an API key: enter it above, then search again.");
}

async function loadInfo() {
  try {
    const info = await api("info");
    $("index-info").textContent = `${info.model.name} · ${info.points} snippets in collection ` +
      `“${info.collection.collection}”`;
    const sources = await api("sources");
    const list = $("source-list");
    list.replaceChildren(...sources.sources.map((s) => {
      const option = el("option");
      option.value = s.source;
      option.label = s.name;
      return option;
    }));
  } catch (error) {
    $("index-info").textContent = "Index information unavailable.";
    if (error.status === 401) askForKey();
  }
}

// --- the query image -------------------------------------------------------------------------------------------

function setImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    setStatus(`${file.name} is not an image.`);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    state.image = reader.result;  // a data: URI, sent as is
    $("image-preview-img").src = reader.result;
    $("image-preview-img").alt = `The query image, ${file.name}`;
    $("image-preview").hidden = false;
    search(false);
  };
  reader.onerror = () => setStatus(`Could not read ${file.name}.`);
  reader.readAsDataURL(file);
}

function clearImage() {
  state.image = null;
  $("image").value = "";
  $("image-preview").hidden = true;
  $("image-preview-img").removeAttribute("src");
  $("q").focus();
}

// --- searching ---------------------------------------------------------------------------------------------------

function requestBody(text) {
  const body = {};
  if (text) body.text = text;
  if (state.image) body.image = state.image;
  const source = $("source").value.trim();
  if (source) body.source = source;
  if ($("group").checked) {
    body.group_by_document = true;
    body.limit = state.groups;
  } else {
    body.limit = PAGE;
    body.offset = state.offset;
  }
  return body;
}

async function search(more) {
  const text = $("q").value.trim();
  if (!text && !state.image) {
    setStatus("Type a query or choose an image.");
    $("q").focus();
    return;
  }
  if (state.busy) return;
  if (!more) { state.offset = 0; state.groups = GROUP_PAGE; }
  state.busy = true;
  $("search-button").disabled = true;
  $("results").setAttribute("aria-busy", "true");
  setStatus("Searching…");
  try {
    const result = await api("search", requestBody(text));
    showResults(result, text, more);
  } catch (error) {
    setStatus("Search failed: " + error.message);
    if (error.status === 401) askForKey();
  } finally {
    state.busy = false;
    $("search-button").disabled = false;
    $("results").removeAttribute("aria-busy");
  }
}

function showMore() {
  if ($("group").checked) state.groups += GROUP_PAGE;
  else state.offset += PAGE;
  search(true);
}

function showResults(result, text, more) {
  const words = queryWords(text);
  const results = $("results");
  let firstNew = null;
  if (result.groups) {
    results.replaceChildren(...result.groups.map((group) => groupSection(group, words)));
    setStatus(result.groups.length ? `${result.groups.length} documents.` : "No results.");
    $("more").hidden = result.groups.length < state.groups;
    return;
  }
  let list = results.querySelector("ol.cards");
  if (!more || !list) {
    list = el("ol", "cards");
    results.replaceChildren(list);
  }
  result.hits.forEach((hit, i) => {
    const item = card(hit, words, state.offset + i + 1);
    if (i === 0) firstNew = item;
    list.append(item);
  });
  const shown = list.children.length;
  setStatus(shown ? `${shown} results.` : "No results.");
  $("more").hidden = result.hits.length < PAGE;
  if (more && firstNew) firstNew.querySelector("a.open").focus();  // keyboard users continue where new hits begin
}

function groupSection(group, words) {
  const section = el("section", "group");
  section.append(el("h2", null, group.name || group.source));
  const list = el("ol", "cards");
  group.hits.forEach((hit, i) => list.append(card(hit, words, i + 1)));
  section.append(list);
  return section;
}

// --- result cards ------------------------------------------------------------------------------------------------

function queryWords(text) {
  const words = (text.toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) || []);
  return Array.from(new Set(words)).sort((a, b) => b.length - a.length);
}

function highlighted(text, words) {
  const p = el("p", "text");
  const shown = text.length > SHOWN_CHARS ? text.slice(0, SHOWN_CHARS) + "…" : text;
  if (!words.length) {
    p.textContent = shown;
    return p;
  }
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(escaped.join("|"), "giu");
  let last = 0;
  for (const match of shown.matchAll(pattern)) {
    p.append(shown.slice(last, match.index), el("mark", null, match[0]));
    last = match.index + match[0].length;
  }
  p.append(shown.slice(last));
  return p;
}

function describe(hit) {
  const where = hit.page ? `, page ${hit.page}` : "";
  return `${hit.kind} from ${hit.name || "an unnamed source"}${where}`;
}

function card(hit, words, rank) {
  const item = el("li", "card");
  item.dataset.id = hit.id;
  item.dataset.source = hit.name || "";
  const target = hit.open_url;
  const full = hit.image_urls.length ? hit.image_urls[0] : target;
  if (hit.thumbnail_url) {
    const link = fileLink(full, "thumb");
    const image = el("img");
    image.alt = `Thumbnail: ${describe(hit)}`;
    image.loading = "lazy";
    image.width = 128;
    loadThumbnail(image, hit.thumbnail_url);
    link.append(image);
    link.setAttribute("aria-label", `Open the image at full size: ${describe(hit)}`);
    item.append(link);
  } else {
    item.append(el("div", "thumb placeholder", hit.kind));
    item.lastChild.setAttribute("aria-hidden", "true");
  }
  const body = el("div", "body");
  const title = el("h3");
  const open = fileLink(target, "open");
  open.textContent = hit.name || hit.source || "(no source)";
  title.append(el("span", "rank", `${rank}.`), " ", open);
  const facts = [hit.page ? `page ${hit.page}` : null, hit.kind, `score ${hit.score.toFixed(3)}`];
  body.append(title, el("p", "meta", facts.filter(Boolean).join(" · ")), highlighted(hit.text, words));
  item.append(body);
  return item;
}

function fileLink(url, className) {
  const link = el("a", className);
  if (!url) return link;
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener";
  link.addEventListener("click", openWithKey);
  return link;
}

function loadThumbnail(image, url) {
  if (!apiKey()) {
    image.src = url;
    return;
  }
  fetch(url, { headers: headers(false) })  // an <img> cannot send the key: fetch it, show it as a blob
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.status))))
    .then((blob) => { image.src = URL.createObjectURL(blob); })
    .catch(() => { image.alt += " (could not be loaded)"; });
}

// With a key, a link cannot carry it either: fetch the file and show it in a new tab. HTML documents go into a
// sandboxed frame there, so a stored page never runs script with this page's origin.
function openWithKey(event) {
  if (!apiKey()) return;
  event.preventDefault();
  const [path, fragment] = event.currentTarget.getAttribute("href").split("#");
  const tab = window.open("", "_blank");
  fetch(path, { headers: headers(false) })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`${r.status} ${r.statusText}`))))
    .then((blob) => {
      const url = URL.createObjectURL(blob) + (fragment ? "#" + fragment : "");
      if (!tab) return;
      if (blob.type.startsWith("text/html")) {
        const frame = tab.document.createElement("iframe");
        frame.sandbox = "";
        frame.style.cssText = "border:0;width:100%;height:100vh";
        frame.src = url;
        tab.document.body.style.margin = "0";
        tab.document.body.append(frame);
      } else {
        tab.location.href = url;
      }
    })
    .catch((error) => {
      if (tab) tab.close();
      setStatus("Could not open the file: " + error.message);
    });
}

// --- wiring ------------------------------------------------------------------------------------------------------

function wireDropZone() {
  const zone = $("drop-zone");
  ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (event) => {
    event.preventDefault();
    zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    setImage(event.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORE, apiKey());
    loadInfo();
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search(false);
  });
  $("image").addEventListener("change", (event) => setImage(event.target.files[0]));
  $("image-clear").addEventListener("click", clearImage);
  $("group").addEventListener("change", () => { if ($("q").value.trim() || state.image) search(false); });
  $("more").addEventListener("click", showMore);
  wireDropZone();
  loadInfo();
  $("q").focus();
});
