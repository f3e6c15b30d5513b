// The search page of `mmsearch serve`: plain JavaScript, no build step, no external resources.
// Every piece of data from the server is put into the page with textContent or attributes, never as HTML.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const form = $("#search-form");
  const q = $("#q");
  const modality = $("#modality");
  const k = $("#k");
  const rerank = $("#rerank");
  const statusLine = $("#status");
  const results = $("#results");
  const viewer = $("#viewer");
  const playerBox = $("#player-box");
  const strip = $("#strip");
  const stripBox = $("#strip-box");
  const fileInput = $("#file");
  const overlay = $("#drop-overlay");

  const FILTERS = ["path", "min_duration", "max_duration", "modified_after", "modified_before", "language", "tag"];
  const FILTER_INPUT = {
    path: $("#path"), min_duration: $("#min-duration"), max_duration: $("#max-duration"),
    modified_after: $("#modified-after"), modified_before: $("#modified-before"), language: $("#language"), tag: $("#tag"),
  };
  const CHOICES = new Set(["language", "tag"]);  // filters chosen from what the index holds (mmsearch info)
  const KIND_BOXES = [...document.querySelectorAll('input[name="kind"]')];
  const DEFAULT_K = 20;
  const AUDIO_EXT = new Set(["mp3", "m4a", "wav", "flac", "ogg", "oga", "opus", "aac", "wma", "aif", "aiff", "alac", "amr"]);
  const IMAGE_EXT = new Set(["jpg", "jpeg", "png", "webp", "gif", "heic", "heif", "avif", "tif", "tiff", "bmp"]);
  const SPACE_LABEL = { visual: "pictures", audio: "sound", speech: "speech", text: "on-screen text", caption: "captions" };
  const SPACE_ORDER = ["visual", "audio", "speech", "text", "caption"];
  const MODALITY_LABEL = { video: "picture", image: "image", audio: "sound", speech: "speech", text: "text", caption: "caption" };

  // what is shown now: the last answer, how it was asked, the selected result and its timeline
  const state = { answer: null, textQuery: null, modality: "", example: null, selected: null, timeline: null, stopAt: null };
  let searchSeq = 0;
  let searchAbort = null;
  let timelineSeq = 0;

  // ------------------------------------------------------------------ formatting
  function clock(seconds) {
    const t = Math.max(0, Math.round(Number(seconds) * 10) / 10);
    const h = Math.floor(t / 3600);
    const m = Math.floor((t - h * 3600) / 60);
    const s = (t - h * 3600 - m * 60).toFixed(1).padStart(4, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }
  const span = (start, end) => `${clock(start)}–${clock(end)}`;
  const basename = (path) => String(path).split(/[\\/]/).pop() || String(path);
  const extension = (path) => { const m = /\.([^./\\]+)$/.exec(String(path)); return m ? m[1].toLowerCase() : ""; };

  // the kind of file a result is in (a sound result may be a video's soundtrack)
  function fileKind(result) {
    if (result.modality === "image") return "image";
    const ext = extension(result.path);
    if (IMAGE_EXT.has(ext)) return "image";
    if (AUDIO_EXT.has(ext)) return "audio";
    return "video";
  }

  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function setStatus(text, kind = "") {
    statusLine.textContent = text;
    statusLine.className = kind;
  }

  // ------------------------------------------------------------------ talking to the server
  function errorText(status, body) {
    if (status === 401) {
      return "This server needs its token: open the address mmsearch serve printed (the one ending in ?token=…).";
    }
    const detail = body && body.detail;
    if (Array.isArray(detail)) {  // FastAPI's validation errors
      return detail.map((d) => {
        const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "query" && p !== "body").join(".") : "";
        return (where ? `${where}: ` : "") + (d.msg || JSON.stringify(d));
      }).join("; ");
    }
    if (typeof detail === "string" && detail) return detail;
    if (status === 413) return "The file is too large for this server.";
    return `The server answered ${status}.`;
  }

  async function getJSON(url, options = {}) {
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", ...options });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new Error("Cannot reach the server: is mmsearch serve still running?");
    }
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const error = new Error(errorText(response.status, body));
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // ------------------------------------------------------------------ query state <-> form <-> URL
  function filterParams() {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = FILTER_INPUT[name].value.trim();
      if (value) params.set(name, value);
    }
    for (const box of KIND_BOXES) if (box.checked) params.append("kind", box.value);
    const n = parseInt(k.value, 10);
    params.set("k", String(Number.isFinite(n) && n > 0 ? Math.min(n, 1000) : DEFAULT_K));
    return params;
  }

  function countFilters() {
    const n = FILTERS.filter((name) => FILTER_INPUT[name].value.trim()).length + (KIND_BOXES.some((b) => b.checked) ? 1 : 0);
    const pill = $("#filter-count");
    pill.hidden = n === 0;
    pill.textContent = String(n);
    return n;
  }

  function writeURL() {
    const params = new URLSearchParams();
    const text = q.value.trim();
    if (text && !state.example) params.set("q", text);
    if (modality.value) params.set("modality", modality.value);
    if (rerank.checked) params.set("rerank", "true");
    for (const [key, value] of filterParams()) {
      if (key === "k" && value === String(DEFAULT_K)) continue;
      params.append(key, value);
    }
    const query = params.toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  }

  function readURL() {
    const params = new URLSearchParams(location.search);
    q.value = params.get("q") || "";
    const m = params.get("modality") || "";
    modality.value = [...modality.options].some((o) => o.value === m) ? m : "";
    for (const name of FILTERS) {
      const value = params.get(name) || "";
      const input = FILTER_INPUT[name];
      if (CHOICES.has(name) && value && ![...input.options].some((o) => o.value === value)) {
        input.append(el("option", { value, text: value }));
      }
      input.value = value;
    }
    const kinds = params.getAll("kind");
    for (const box of KIND_BOXES) box.checked = kinds.includes(box.value);
    k.value = params.get("k") || String(DEFAULT_K);
    rerank.checked = params.get("rerank") === "true";
    if (countFilters() || rerank.checked) $("#filters").open = true;
  }

  // ------------------------------------------------------------------ searching
  async function searchText() {
    const text = q.value.trim();
    clearExample(false);
    writeURL();
    if (!text) {
      setStatus("Type what to look for, or drop an image or a sound file on the page.");
      return;
    }
    const params = filterParams();
    params.set("q", text);
    if (modality.value) params.set("modality", modality.value);
    if (rerank.checked) params.set("rerank", "true");  // only a text query: the matcher reads words against pictures
    await runSearch(`/api/search?${params}`, {}, { textQuery: text, modality: modality.value, example: null },
      rerank.checked ? `“${text}” (re-ranked by the matcher)` : `“${text}”`);
  }

  async function searchExample(file) {
    if (!file) return;
    const type = (file.type || "").split("/")[0];
    const ext = extension(file.name);
    const looksLike = type === "image" || type === "audio" ? type
      : IMAGE_EXT.has(ext) ? "image" : AUDIO_EXT.has(ext) ? "audio" : null;
    if (!looksLike) {
      setStatus(`${file.name}: drop an image or a sound file (a ${type || "file of this kind"} cannot be an example).`, "error");
      return;
    }
    showExample(file, looksLike);
    state.lastFile = file;  // a changed filter or switch asks again with it
    writeURL();
    const params = filterParams();
    // an example searches pictures (image) or sound (audio); only those two modalities apply to it
    if (modality.value === "video" || modality.value === "audio") params.set("modality", modality.value);
    const body = new FormData();
    body.append("file", file, file.name);
    // words (speech, on-screen text) are not searched by example: say what is searched instead
    const searched = params.get("modality") || (looksLike === "image" ? "video" : "audio");
    const note = modality.value && modality.value !== searched
      ? ` (an example finds ${searched === "video" ? "pictures" : "sound"}, not ${modality.options[modality.selectedIndex].text.toLowerCase()})` : "";
    await runSearch(`/api/search?${params}`, { method: "POST", body },
      { textQuery: null, modality: modality.value, example: file.name }, `the ${looksLike} ${file.name}${note}`);
  }

  async function runSearch(url, options, how, label) {
    const seq = ++searchSeq;
    if (searchAbort) searchAbort.abort();
    searchAbort = new AbortController();
    document.body.classList.add("busy");
    setStatus(`Searching for ${label}…`);
    try {
      const answer = await getJSON(url, { ...options, signal: searchAbort.signal });
      if (seq !== searchSeq) return;
      Object.assign(state, how, { answer });
      showResults(answer, label);
    } catch (err) {
      if (err && err.name === "AbortError") return;
      if (seq !== searchSeq) return;
      results.replaceChildren();  // no stale results under an error
      closeViewer();
      setStatus(err.message, "error");
    } finally {
      if (seq === searchSeq) document.body.classList.remove("busy");
    }
  }

  function showResults(answer, label) {
    const rows = (answer && answer.results) || [];
    results.replaceChildren();
    closeViewer();
    results.dataset.count = String(rows.length);
    if (!rows.length) {
      setStatus(`No results for ${label}${countFilters() ? " with these filters" : ""}.`, "empty");
      results.append(el("p", { class: "no-results", id: "no-results", text: "No results." }));
      return;
    }
    setStatus(`${rows.length} moment${rows.length === 1 ? "" : "s"} for ${label}, best first. Click one to play it.`);
    rows.forEach((row, i) => results.append(card(row, i)));
  }

  function card(row, i) {
    const kind = fileKind(row);
    const still = kind === "image";
    const name = basename(row.path);
    const score = Number(row.score);
    const thumb = el("img", { class: "thumb", loading: "lazy", decoding: "async", alt: "", src: row.thumbnail_url });
    thumb.addEventListener("error", () => thumb.classList.add("broken"), { once: true });
    const media = el("div", { class: `media kind-${kind}` }, [
      thumb,
      el("span", { class: `badge m-${row.modality}`, text: MODALITY_LABEL[row.modality] || row.modality }),
      still ? null : el("span", { class: "time", text: span(row.start, row.end) }),
    ]);
    const info = el("div", { class: "info" }, [
      el("div", { class: "name", title: row.path, text: name }),
      el("div", { class: "meta" }, [
        el("span", { class: "range", text: still ? "image" : span(row.start, row.end) }),
        el("span", { class: "score", title: "score (higher is better)", text: Number.isFinite(score) ? score.toFixed(3) : "–" }),
        row.match_score === null || row.match_score === undefined ? null
          : el("span", { class: "match", title: "re-ranking: the matcher's probability that the words describe this moment's picture",
            text: `match ${Number(row.match_score).toFixed(2)}` }),
      ]),
      row.text ? el("div", { class: "words", title: row.text, text: `“${row.text}”` }) : null,
      row.caption && row.caption !== row.text ? el("div", { class: "caption", title: "caption: what the captioner says is seen", text: row.caption }) : null,
      row.tags && row.tags.length ? el("div", { class: "tags", title: "sound tags (probability)" },
        row.tags.map((t) => el("span", { class: "tag", text: `${t.label} ${Number(t.score).toFixed(2)}` }))) : null,
    ]);
    const node = el("article", {
      class: "result", tabindex: "0", role: "button",
      "aria-label": `${name}, ${still ? "image" : span(row.start, row.end)}, score ${Number.isFinite(score) ? score.toFixed(3) : ""}`,
      dataset: {
        rank: String(i + 1), mediaId: String(row.media_id), start: String(row.start), end: String(row.end),
        modality: String(row.modality), kind, path: String(row.path), score: String(row.score),
      },
    }, [media, info]);
    node.addEventListener("click", () => select(node, row));
    node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); select(node, row); }
    });
    return node;
  }

  // ------------------------------------------------------------------ the selected moment
  function select(node, row) {
    for (const other of results.querySelectorAll(".result.selected")) other.classList.remove("selected");
    node.classList.add("selected");
    state.selected = row;
    const kind = fileKind(row);
    const still = kind === "image";
    viewer.hidden = false;
    document.body.classList.add("viewing");
    $("#viewer-title").textContent = basename(row.path);
    $("#viewer-title").title = row.path;
    $("#viewer-sub").textContent = still ? `image · score ${Number(row.score).toFixed(3)}`
      : `${span(row.start, row.end)} · ${MODALITY_LABEL[row.modality] || row.modality} · score ${Number(row.score).toFixed(3)}`;
    const words = $("#viewer-words");
    words.hidden = !row.text;
    words.textContent = row.text ? `“${row.text}”` : "";
    play(row, kind);
    showTimeline(row, kind);
    if (window.matchMedia("(max-width: 900px)").matches) viewer.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function play(row, kind) {
    const old = $("#player");
    if (old && old.pause) { old.pause(); old.removeAttribute("src"); old.load(); }
    playerBox.replaceChildren();
    state.stopAt = null;
    const mediaUrl = row.media_url || `/media/${row.media_id}`;
    if (kind === "image") {
      const img = el("img", { id: "player", alt: basename(row.path), src: mediaUrl.split("#")[0] });
      playerBox.append(img);
      return;
    }
    const start = Number(row.start) || 0;
    const end = Number(row.end) || 0;
    const player = el(kind === "audio" ? "audio" : "video", { id: "player", controls: "", preload: "auto", playsinline: "" });
    player.dataset.start = String(start);
    player.dataset.end = String(end);
    state.stopAt = end > start ? end : null;
    player.addEventListener("loadedmetadata", () => {
      if (Math.abs(player.currentTime - start) > 0.05) player.currentTime = start;
      const attempt = player.play();
      if (attempt && attempt.catch) {
        attempt.catch(() => {  // a browser that refuses sound without a gesture: play muted, the controls unmute
          player.muted = true;
          player.play().catch(() => {});
        });
      }
    }, { once: true });
    player.addEventListener("timeupdate", () => {
      if (state.stopAt !== null && player.currentTime >= state.stopAt) {
        const end = state.stopAt;
        state.stopAt = null;  // pressing play again continues past the moment
        player.pause();
        if (player.currentTime - end < 0.5) player.currentTime = end;  // timeupdate comes every ~250 ms: stop on the second
      }
      drawStrip();
    });
    player.addEventListener("seeking", () => {  // the user went elsewhere: no stop at the end of the moment
      if (player.currentTime < start - 0.5 || player.currentTime > end + 0.5) state.stopAt = null;
    });
    player.addEventListener("seeked", drawStrip);
    player.addEventListener("error", () => {
      const code = player.error && player.error.code;
      setStatus(code === 4 ? `This browser cannot play ${basename(row.path)} (its format); open it with a player instead.`
        : `Cannot load ${basename(row.path)}.`, "error");
    });
    player.src = mediaUrl;  // "#t=start,end": the browser starts there too (Media Fragments)
    playerBox.append(player);
  }

  function seek(seconds) {
    const player = $("#player");
    if (!player || typeof player.play !== "function") return;
    state.stopAt = null;
    player.currentTime = seconds;
    player.play().catch(() => {});
  }

  function closeViewer() {
    const player = $("#player");
    if (player && player.pause) { player.pause(); player.removeAttribute("src"); player.load(); }
    playerBox.replaceChildren();
    viewer.hidden = true;
    document.body.classList.remove("viewing");
    state.selected = null;
    state.timeline = null;
    delete strip.dataset.spaces;
    delete strip.dataset.media;
    for (const other of results.querySelectorAll(".result.selected")) other.classList.remove("selected");
  }

  // ------------------------------------------------------------------ similarity over time
  async function showTimeline(row, kind) {
    const seq = ++timelineSeq;
    state.timeline = null;
    delete strip.dataset.spaces;
    delete strip.dataset.media;
    const note = $("#strip-note");
    if (kind === "image") { stripBox.hidden = true; return; }
    stripBox.hidden = false;
    if (!state.textQuery) {
      note.textContent = "shown for a query in words";
      strip.height = 0;
      return;
    }
    note.textContent = "loading…";
    const params = new URLSearchParams({ q: state.textQuery, media: String(row.media_id) });
    // every space the file has, unless the search was in one of them
    params.set("modality", state.modality && state.modality !== "all" ? state.modality : "all");
    try {
      const data = await getJSON(`/api/timeline?${params}`);
      if (seq !== timelineSeq) return;
      state.timeline = data;
      note.textContent = "";
      drawStrip();
    } catch (err) {
      if (seq !== timelineSeq) return;
      note.textContent = err.message;
    }
  }

  const LABEL_W = 104;
  const ROW_H = 26;
  const MIN_SPREAD = 0.1;
  const AXIS_H = 18;

  function stripRows() {
    const spaces = (state.timeline && state.timeline.spaces) || {};
    const names = Object.keys(spaces).filter((s) => spaces[s] && spaces[s].start && spaces[s].start.length);
    names.sort((a, b) => (SPACE_ORDER.indexOf(a) + 1 || 99) - (SPACE_ORDER.indexOf(b) + 1 || 99));
    return names.map((name) => ({ name, ...spaces[name] }));
  }

  function stripDuration(rows) {
    let duration = Number(state.timeline && state.timeline.duration) || 0;
    for (const row of rows) duration = Math.max(duration, ...row.end.map(Number));
    if (state.selected) duration = Math.max(duration, Number(state.selected.end) || 0);
    return duration || 1;
  }

  function heat(v) {  // 0..1 -> a dark-blue to amber ramp
    const stops = [[22, 30, 48], [38, 84, 140], [64, 160, 170], [240, 200, 80], [255, 244, 200]];
    const x = Math.min(1, Math.max(0, v)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(x));
    const f = x - i;
    const c = stops[i].map((a, j) => Math.round(a + (stops[i + 1][j] - a) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function tickStep(duration, width) {  // seconds between labelled ticks: about one per 70 px
    const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
    return steps.find((step) => (duration / step) * 70 <= width) || steps[steps.length - 1];
  }

  function drawStrip() {
    if (!state.timeline || stripBox.hidden) return;
    const rows = stripRows();
    const duration = stripDuration(rows);
    const ratio = window.devicePixelRatio || 1;
    const cssW = Math.max(200, strip.clientWidth || stripBox.clientWidth || 400);
    const cssH = Math.max(1, rows.length) * ROW_H + AXIS_H;
    if (strip.width !== Math.round(cssW * ratio) || strip.height !== Math.round(cssH * ratio)) {
      strip.width = Math.round(cssW * ratio);
      strip.height = Math.round(cssH * ratio);
      strip.style.height = `${cssH}px`;
    }
    const g = strip.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, cssW, cssH);
    const styles = getComputedStyle(document.body);
    const ink = styles.getPropertyValue("--ink").trim() || "#222";
    const faint = styles.getPropertyValue("--faint").trim() || "#888";
    const plotW = cssW - LABEL_W;
    // x of a second, on whole device pixels so that neighbouring segments meet without seams
    const xOf = (t) => Math.round((LABEL_W + (Math.min(Math.max(t, 0), duration) / duration) * plotW) * ratio) / ratio;
    g.font = "12px system-ui, sans-serif";
    g.textBaseline = "middle";
    if (!rows.length) {
      g.fillStyle = faint;
      g.fillText("nothing in this file to compare with the query", LABEL_W, ROW_H / 2);
    }
    rows.forEach((row, r) => {
      const y = r * ROW_H;
      g.fillStyle = ink;
      g.textAlign = "left";
      g.fillText(SPACE_LABEL[row.name] || row.name, 2, y + ROW_H / 2);
      const scores = row.score.map(Number);
      const lo = Math.min(...scores);
      // a row is scaled from its worst to its best segment, but never over less than MIN_SPREAD
      // (cosine or word-score units), so a row where nothing stands out stays dim
      const span = Math.max(Math.max(...scores) - lo, MIN_SPREAD);
      g.fillStyle = heat(0);
      g.fillRect(LABEL_W, y + 2, plotW, ROW_H - 4);
      row.start.forEach((s, i) => {
        const x0 = xOf(Number(s));
        const x1 = Math.max(x0 + 1, xOf(Number(row.end[i])));
        g.fillStyle = heat((scores[i] - lo) / span);
        g.fillRect(x0, y + 2, x1 - x0, ROW_H - 4);
      });
    });
    const bottom = Math.max(1, rows.length) * ROW_H;
    // the time axis
    g.fillStyle = faint;
    g.textBaseline = "top";
    const step = tickStep(duration, plotW);
    for (let t = 0; t <= duration + 1e-6; t += step) {
      const x = xOf(t);
      g.fillRect(x, bottom, 1, 3);
      const text = step >= 1 ? clock(t).replace(/\.0$/, "") : clock(t);
      g.textAlign = t === 0 ? "left" : "center";
      if (x < cssW - 64) g.fillText(text, x, bottom + 3);  // room for the duration at the right end
    }
    g.textAlign = "right";
    g.fillText(clock(duration), cssW - 1, bottom + 3);
    g.textAlign = "left";
    if (state.selected) {  // the moment of the selected result
      const x0 = xOf(Number(state.selected.start));
      const x1 = Math.max(x0 + 2, xOf(Number(state.selected.end)));
      g.strokeStyle = "#ff4d6d";
      g.lineWidth = 2;
      g.strokeRect(x0, 1, x1 - x0, bottom - 2);
    }
    const player = $("#player");
    if (player && typeof player.currentTime === "number" && player.readyState > 0) {  // where the player is
      const x = xOf(player.currentTime);
      g.fillStyle = ink;
      g.fillRect(x - 1, 0, 2, bottom);
    }
    strip.dataset.labelWidth = String(LABEL_W);
    strip.dataset.spaces = String(rows.length);
    strip.dataset.media = String(state.timeline.media);
    strip.dataset.duration = String(duration);
  }

  strip.addEventListener("click", (event) => {
    if (!state.timeline) return;
    const box = strip.getBoundingClientRect();
    const x = event.clientX - box.left;
    if (x < LABEL_W) return;
    const duration = stripDuration(stripRows());
    seek(Math.min(duration, Math.max(0, ((x - LABEL_W) / (box.width - LABEL_W)) * duration)));
  });
  window.addEventListener("resize", () => drawStrip());

  // ------------------------------------------------------------------ search by example
  function showExample(file, kind) {
    state.example = file.name;
    const box = $("#example");
    const preview = $("#example-preview");
    if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
    if (kind === "image") {
      const url = URL.createObjectURL(file);
      preview.src = url;
      preview.dataset.url = url;
      preview.hidden = false;
    } else {
      preview.removeAttribute("src");
      delete preview.dataset.url;
      preview.hidden = true;
    }
    $("#example-name").textContent = file.name;
    box.dataset.kind = kind;
    box.hidden = false;
    q.value = "";
  }

  function clearExample(rewrite = true) {
    state.example = null;
    $("#example").hidden = true;
    const preview = $("#example-preview");
    if (preview.dataset.url) { URL.revokeObjectURL(preview.dataset.url); delete preview.dataset.url; }
    if (rewrite) writeURL();
  }

  let dragDepth = 0;
  const carriesFiles = (event) => event.dataTransfer && [...(event.dataTransfer.types || [])].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    overlay.hidden = false;
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) overlay.hidden = true;
  });
  document.addEventListener("drop", (event) => {
    dragDepth = 0;
    overlay.hidden = true;
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    event.preventDefault();
    searchExample(files[0]);
  });
  $("#pick").addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    if (fileInput.files && fileInput.files.length) searchExample(fileInput.files[0]);
    fileInput.value = "";
  });
  $("#example-clear").addEventListener("click", () => {
    clearExample();
    results.replaceChildren();
    closeViewer();
    setStatus("");
    q.focus();
  });

  // ------------------------------------------------------------------ the form
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    searchText();
  });
  function rerun() {  // a changed switch or filter asks again what was asked
    countFilters();
    writeURL();
    if (state.example && state.lastFile) searchExample(state.lastFile);
    else if (q.value.trim()) searchText();
  }
  modality.addEventListener("change", rerun);
  for (const box of KIND_BOXES) box.addEventListener("change", rerun);
  for (const name of FILTERS) FILTER_INPUT[name].addEventListener("change", rerun);
  k.addEventListener("change", rerun);
  rerank.addEventListener("change", rerun);
  $("#clear-filters").addEventListener("click", () => {
    for (const name of FILTERS) FILTER_INPUT[name].value = "";
    for (const box of KIND_BOXES) box.checked = false;
    rerun();
  });
  $("#viewer-close").addEventListener("click", closeViewer);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !viewer.hidden) closeViewer();
  });
  // ------------------------------------------------------------------ start
  function fillChoices(select, counts, emptyTitle) {
    // the values the index holds, most frequent first, each with its count; disabled when there are none
    const chosen = select.value;
    const values = Object.keys(counts).sort((a, b) => counts[b] - counts[a] || a.localeCompare(b));
    for (const value of values) {
      const option = [...select.options].find((o) => o.value === value);
      if (!option) select.append(el("option", { value, text: `${value} (${counts[value]})` }));
      else option.textContent = `${value} (${counts[value]})`;
    }
    select.value = chosen;
    select.disabled = !values.length && !chosen;
    if (select.disabled) select.title = emptyTitle;
  }

  async function loadInfo() {
    try {
      const info = await getJSON("/api/info");
      const media = info.media || {};
      const parts = ["video", "image", "audio"].filter((kind) => media[kind])
        .map((kind) => `${media[kind]} ${kind === "audio" ? "audio" : kind + (media[kind] === 1 ? "" : "s")}`);
      $("#index-info").textContent = parts.length ? `Index: ${parts.join(", ")}` : "The index is empty.";
      fillChoices(FILTER_INPUT.language, info.languages || {}, "No speech in this index has a known language.");
      fillChoices(FILTER_INPUT.tag, (info.sound_tags || {}).labels || {}, "This index has no sound tags (mmsearch index --sound-tags).");
    } catch (err) {
      if (err.status === 401) setStatus(err.message, "error");
    }
  }

  const header = $("#top");
  const headerHeight = () => document.documentElement.style.setProperty("--header-h", `${header.offsetHeight}px`);
  if (window.ResizeObserver) new ResizeObserver(headerHeight).observe(header);
  headerHeight();

  readURL();
  loadInfo();
  if (q.value.trim()) searchText();
  else setStatus("Type what to look for, or drop an image or a sound file anywhere on the page.");
})();
