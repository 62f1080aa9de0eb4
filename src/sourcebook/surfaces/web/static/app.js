// Sourcebook web UI: one script for every page (<body data-page> picks which). It talks
// only to the JSON API under /api, like any other client, so the server's checks apply
// to the browser too. Text from the knowledge base enters the page through text nodes
// (el() below), never as HTML: a note containing <script> is shown, not run.
"use strict";

// Authentication hook: a key saved in this browser (localStorage) is sent with every API
// call as a bearer token, so the pages keep working once the server asks for credentials.
const KEY_STORAGE = "sourcebook.apiKey";
// lines shown around a citation in the chat's side panel
const CONTEXT_LINES = 30;
const SNIPPET_CHARS = 280;

const $ = (selector) => document.querySelector(selector);

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function authHeaders(extra = {}) {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  if (!response.ok) throw new ApiError(await errorText(response), response.status);
  return response;
}

async function getJson(path) {
  return (await api(path)).json();
}

async function errorText(response) {
  try {
    const { detail } = await response.json();
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; "); // validation
  } catch {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText}`;
}

// An element with attributes and children; strings become text nodes (never HTML).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== undefined && child !== null));
  return node;
}

function errorNode(error) {
  const node = el(
    "div",
    { class: "error", role: "alert" },
    el("p", {}, error.message || String(error)),
  );
  if (error.status === 401) node.append(keyForm());
  return node;
}

// The server has users and wants a key: ask for it once, keep it in this browser, reload.
function keyForm() {
  const input = el("input", {
    type: "password",
    autocomplete: "off",
    "aria-label": "API key",
    placeholder: "API key",
  });
  const form = el(
    "form",
    { class: "key-form" },
    input,
    " ",
    el("button", { type: "submit" }, "保存 Save"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    localStorage.setItem(KEY_STORAGE, key);
    window.location.reload();
  });
  return form;
}

// --- paths and lines ---------------------------------------------------------------------

// The knowledge base's sources, to show paths relative to the folder that holds each
// source ("notes/training/optimizers.md") instead of long absolute paths.
let roots = [];

async function loadRoots() {
  try {
    roots = (await getJson("/api/collections")).map((c) => c.path.replace(/\/+$/, ""));
  } catch {
    roots = []; // full paths, then
  }
}

function shortPath(path) {
  let root = "";
  for (const candidate of roots) {
    const inside = path === candidate || path.startsWith(`${candidate}/`);
    if (inside && candidate.length > root.length) root = candidate;
  }
  if (!root) return path;
  return path.slice(root.lastIndexOf("/") + 1);
}

function span(first, last) {
  return first === last ? `${first}` : `${first}-${last}`;
}

function hitLocation(hit) {
  const pages = hit.page_start ? ` (p. ${span(hit.page_start, hit.page_end)})` : "";
  return `${shortPath(hit.path)}:${span(hit.line_start, hit.line_end)}${pages}`;
}

// "title › heading › subheading"; the heading path often starts with the title itself
function wherePath(hit) {
  const parts = [...hit.heading_path];
  if (parts[0] !== hit.title) parts.unshift(hit.title);
  return parts.filter(Boolean).join(" › ");
}

// The document view of lines first..last; `ranges`, when given, are the lines within them
// to highlight (a citation quoting lines 11 and 17 should not light up 12-16).
function documentHref(docId, first, last, ranges, page) {
  const lines = ranges ? `&lines=${ranges.map(([a, b]) => span(a, b)).join(",")}` : "";
  return `/documents/${docId}?start=${first}&end=${last}${lines}${page ? `&page=${page}` : ""}`;
}

// "11,17-18" → [[11, 11], [17, 18]]; anything else in the list is ignored
function parseRanges(text) {
  return (text ?? "").split(",").flatMap((part) => {
    const match = /^\s*(\d+)(?:-(\d+))?\s*$/.exec(part);
    if (!match) return [];
    const first = Number(match[1]);
    const last = Number(match[2] ?? match[1]);
    return first >= 1 && last >= first ? [[first, last]] : [];
  });
}

// Numbered lines into `container`, the lines inside `ranges` ([first, last], 1-based)
// highlighted and the first of them scrolled into view.
function renderLines(container, text, firstLine, ranges) {
  const rows = document.createDocumentFragment();
  text.split("\n").forEach((line, i) => {
    const n = firstLine + i;
    const marked = ranges.some(([first, last]) => n >= first && n <= last);
    rows.append(
      el(
        "div",
        { class: marked ? "line hl" : "line", "data-line": n },
        el("span", { class: "ln", "aria-hidden": "true" }, String(n)),
        el("span", { class: "lt" }, line),
      ),
    );
  });
  container.replaceChildren(rows);
  const target = container.querySelector(".hl");
  if (!target) return;
  if (container.scrollHeight > container.clientHeight) {
    // a scrolling panel (the chat's): move only the panel, not the page around it
    container.scrollTop = target.offsetTop - (container.clientHeight - target.offsetHeight) / 2;
  } else {
    target.scrollIntoView({ block: "center" });
  }
}

// --- chat --------------------------------------------------------------------------------

// Server-sent events from a fetch() response (EventSource cannot POST a question).
async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      yield { event, data: data.join("\n") };
    }
  }
}

const LABELS = {
  zh: {
    sources: "来源",
    nearest: "最接近的内容（不足以回答）",
    line: "行",
    extractive: "摘录",
    generate: "生成",
    cached: "缓存",
    confidence: "置信度",
  },
  en: {
    sources: "Sources",
    nearest: "Nearest passages (not enough to answer)",
    line: "line",
    extractive: "extractive",
    generate: "generated",
    cached: "cached",
    confidence: "confidence",
  },
};

let viewerTicket = 0;

function initChat() {
  const form = $("#ask-form");
  const question = $("#question");
  const turns = $("#turns");
  const modes = $("#mode");
  loadRoots();
  // the mode switch only when the server has a language model to generate with
  getJson("/api/health")
    .then((health) => {
      modes.hidden = !health.generate;
    })
    .catch(() => {});
  question.addEventListener("keydown", (event) => {
    // Enter asks, Shift+Enter is a new line; Enter that confirms an IME (pinyin) choice
    // must not send the half-typed question
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = question.value.trim();
    if (!text) return;
    question.value = "";
    // without the switch the server's default mode applies
    const mode = modes.hidden ? undefined : form.elements.mode.value;
    ask(text, mode, turns);
  });
  $("#viewer-close").addEventListener("click", () => {
    $("#viewer").hidden = true;
  });
}

async function ask(text, mode, turns) {
  const box = el("div", { class: "answer pending" }, el("p", { class: "answer-text" }));
  const turn = el("article", { class: "turn" }, el("p", { class: "question" }, text), box);
  turns.append(turn);
  turn.scrollIntoView({ block: "end" });
  let draft = "";
  try {
    const response = await api("/api/ask/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(mode ? { question: text, mode } : { question: text }),
    });
    for await (const { event, data } of serverEvents(response)) {
      if (event === "token") {
        // the model's draft as it is written; replaced by the verified answer
        draft += JSON.parse(data).text;
        box.className = "answer drafting";
        box.querySelector(".answer-text").textContent = draft;
      } else if (event === "answer") {
        showAnswer(box, JSON.parse(data));
        return;
      } else if (event === "error") {
        throw new ApiError(JSON.parse(data).detail);
      }
    }
    throw new ApiError("the answer stream ended before the answer");
  } catch (error) {
    box.className = "answer failed";
    box.replaceChildren(errorNode(error));
  }
}

function showAnswer(box, answer) {
  const labels = LABELS[answer.language] || LABELS.en;
  box.className = answer.found ? "answer" : "answer not-found";
  box.dataset.found = String(answer.found);
  const byNumber = new Map(answer.citations.map((c) => [c.n, c]));
  const text = el("p", { class: "answer-text", lang: answer.language });
  for (const part of answer.text.split(/(\[\d+\])/)) {
    const citation = byNumber.get(Number(/^\[(\d+)\]$/.exec(part)?.[1]));
    text.append(citation ? citeButton(citation, part) : part);
  }
  const meta = [labels[answer.mode] || answer.mode];
  if (answer.found) meta.push(`${labels.confidence} ${answer.confidence.toFixed(2)}`);
  if (answer.cached) meta.push(labels.cached);
  const children = [text];
  const notice = answer.verification?.notice;
  if (notice) children.push(el("p", { class: "notice" }, notice));
  children.push(el("p", { class: "answer-meta muted" }, meta.join(" · ")));
  if (answer.citations.length) {
    children.push(el("h3", {}, answer.found ? labels.sources : labels.nearest));
    children.push(
      el("ol", { class: "sources" }, ...answer.citations.map((c) => sourceItem(c, labels))),
    );
  }
  box.replaceChildren(...children);
}

function citeButton(citation, label) {
  const button = el(
    "button",
    { type: "button", class: "cite", "data-n": citation.n, title: hitLocation(citation.hit) },
    label,
  );
  button.addEventListener("click", () => openCitation(citation));
  return button;
}

function sourceItem(citation, labels) {
  const hit = citation.hit;
  const link = el(
    "button",
    { type: "button", class: "source-link", "data-n": citation.n, title: hit.path },
    `[${citation.n}] `,
    el("span", { class: "path" }, hitLocation(hit)),
  );
  link.addEventListener("click", () => openCitation(citation));
  const item = el("li", {}, link, " ", el("span", { class: "where" }, wherePath(hit)));
  citation.quotes.forEach((quote, i) => {
    const lines = citation.quote_lines[i];
    const where = lines ? `${labels.line} ${span(lines[0], lines[1])}` : undefined;
    item.append(el("blockquote", {}, where && el("span", { class: "quote-lines" }, where), quote));
  });
  return item;
}

// The cited passage in the side panel: the quoted sentences' lines highlighted (the whole
// chunk when a citation records no sentence lines), with some lines around them.
async function openCitation(citation) {
  const ticket = ++viewerTicket; // a later click wins over a slower earlier fetch
  const hit = citation.hit;
  const ranges = citation.quote_lines.length
    ? citation.quote_lines
    : [[hit.line_start, hit.line_end]];
  const first = Math.min(...ranges.map((r) => r[0]));
  const last = Math.max(...ranges.map((r) => r[1]));
  const viewer = $("#viewer");
  const lines = $("#viewer-lines");
  $("#viewer-title").textContent = `[${citation.n}] ${hit.title}`;
  $("#viewer-path").textContent = `${shortPath(hit.path)}:${span(first, last)}`;
  $("#viewer-path").title = hit.path;
  $("#viewer-open").href = documentHref(hit.doc_id, first, last, ranges, hit.page_start);
  lines.replaceChildren(el("p", { class: "muted" }, "…"));
  viewer.hidden = false;
  const start = Math.max(1, Math.min(first, hit.line_start) - CONTEXT_LINES);
  const end = Math.max(last, hit.line_end) + CONTEXT_LINES;
  const current = () => ticket === viewerTicket;
  showPage($("#viewer-page"), hit.doc_id, hit.page_start, ranges, current);
  try {
    const passage = await getJson(`/api/documents/${hit.doc_id}/text?start=${start}&end=${end}`);
    if (current()) renderLines(lines, passage.text, passage.line_start, ranges);
  } catch (error) {
    if (current()) lines.replaceChildren(errorNode(error));
  }
}

// The page of a PDF (or an image) that a citation quotes, drawn by the server, with the
// quoted lines' regions marked over it. Fetched with the API key like every call, so the
// image comes in as a blob. `current()` is false once a later citation was opened.
async function showPage(container, docId, page, ranges, current = () => true) {
  const old = container.querySelector("img")?.src;
  if (old) URL.revokeObjectURL(old);
  container.replaceChildren();
  container.hidden = true;
  if (!page || !ranges.length) return;
  try {
    const lists = await Promise.all(
      ranges.map(([a, b]) => getJson(`/api/documents/${docId}/regions?start=${a}&end=${b}`)),
    );
    const regions = lists.flat();
    const shown = regions.length ? regions[0].page : page;
    const blob = await (await api(`/api/documents/${docId}/pages/${shown}?width=1000`)).blob();
    if (!current()) return;
    const frame = el("div", { class: "page-frame" });
    frame.append(el("img", { src: URL.createObjectURL(blob), alt: `page ${shown}` }));
    for (const region of regions.filter((r) => r.page === shown)) {
      const [x0, y0, x1, y1] = region.box;
      const mark = el("div", { class: "page-region" });
      // CSSOM, not a style attribute: allowed by the page's Content-Security-Policy
      Object.assign(mark.style, {
        left: `${x0 * 100}%`,
        top: `${y0 * 100}%`,
        width: `${(x1 - x0) * 100}%`,
        height: `${(y1 - y0) * 100}%`,
      });
      frame.append(mark);
    }
    container.append(el("p", { class: "page-label muted" }, `第 ${shown} 页 page ${shown}`), frame);
    container.hidden = false;
    frame.querySelector(".page-region")?.scrollIntoView({ block: "center" });
  } catch (error) {
    if (current()) {
      container.replaceChildren(errorNode(error));
      container.hidden = false;
    }
  }
}

// --- documents ---------------------------------------------------------------------------

const STATES = {
  indexed: "已索引 indexed",
  changed: "已修改 changed",
  missing: "已删除 missing",
  unchanged: "未变 unchanged",
  failed: "失败 failed",
  unsupported: "不支持 unsupported",
};

// Chunks stored but not embedded yet are found by keyword only: say so, and follow the
// background embedder until it is done.
async function showEmbeddingStatus() {
  const line = $("#embedding-status");
  if (!line) return;
  try {
    const status = await getJson("/api/status");
    const partial = status.indexed_in_part ?? [];
    const notes = [];
    if (status.embedding) notes.push(`向量化中，其余块暂仅按关键词检索 · ${status.embedding}`);
    if (partial.length) {
      // a large CSV whose ingest was stopped: the next sync reads it again
      notes.push(`部分索引 indexed in part (sync reads again): ${partial.map(shortPath).join(", ")}`);
    }
    line.hidden = !notes.length;
    line.textContent = notes.join(" · ");
    if (status.embedding) setTimeout(showEmbeddingStatus, 3000);
  } catch {
    line.hidden = true;
  }
}

function initDocuments() {
  const form = $("#upload-form");
  const results = $("#upload-results");
  loadDocuments();
  showEmbeddingStatus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const files = $("#files").files;
    if (!files.length) return;
    const body = new FormData();
    for (const file of files) body.append("files", file);
    const button = form.querySelector("button");
    button.disabled = true;
    results.replaceChildren(el("li", { class: "muted" }, "上传并索引中… Uploading and indexing…"));
    try {
      const report = await (await api("/api/documents", { method: "POST", body })).json();
      results.replaceChildren(...report.files.map(uploadResult));
      form.reset();
      await loadDocuments();
    } catch (error) {
      results.replaceChildren(el("li", {}, errorNode(error)));
    } finally {
      button.disabled = false;
    }
  });
}

function uploadResult(file) {
  const name = file.document
    ? el("a", { href: `/documents/${file.document.id}` }, file.name)
    : el("span", {}, file.name);
  return el(
    "li",
    { class: `upload-result ${file.status}`, "data-status": file.status },
    name,
    " ",
    el("span", { class: `badge ${file.status}` }, STATES[file.status] || file.status),
    file.reason ? el("span", { class: "reason" }, ` ${file.reason}`) : undefined,
  );
}

async function loadDocuments() {
  const body = $("#documents tbody");
  const summary = $("#documents-summary");
  try {
    await loadRoots();
    const documents = await getJson("/api/documents");
    documents.sort((a, b) => a.path.localeCompare(b.path));
    const chunks = documents.reduce((sum, d) => sum + d.chunks, 0);
    summary.textContent = `${documents.length} 个文档 documents · ${chunks} 块 chunks`;
    body.replaceChildren(...documents.map(documentRow));
  } catch (error) {
    summary.replaceChildren(errorNode(error));
  }
}

function documentRow(doc) {
  return el(
    "tr",
    { "data-id": doc.id },
    el("td", {}, el("a", { href: `/documents/${doc.id}` }, doc.title || shortPath(doc.path))),
    el("td", { class: "path", title: doc.path }, shortPath(doc.path)),
    el("td", {}, el("span", { class: `badge ${doc.state}` }, STATES[doc.state] || doc.state)),
    el("td", { class: "num" }, String(doc.chunks)),
    el("td", {}, new Date(doc.modified).toLocaleString()),
  );
}

// --- search ------------------------------------------------------------------------------

function initSearch() {
  const form = $("#search-form");
  const input = $("#q");
  loadRoots();
  showEmbeddingStatus();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = input.value.trim();
    if (!query) return;
    // the query in the address, so a search can be bookmarked, shared and reloaded
    history.replaceState(null, "", `?q=${encodeURIComponent(query)}`);
    runSearch(query);
  });
  const query = new URLSearchParams(window.location.search).get("q");
  if (query) {
    input.value = query;
    runSearch(query);
  }
}

async function runSearch(query) {
  const summary = $("#search-summary");
  const results = $("#results");
  summary.textContent = "…";
  results.replaceChildren();
  try {
    const hits = await getJson(`/api/search?q=${encodeURIComponent(query)}&limit=20`);
    summary.textContent = `${hits.length} 条结果 results`;
    results.replaceChildren(...hits.map(searchResult));
  } catch (error) {
    summary.replaceChildren(errorNode(error));
  }
}

function searchResult(hit) {
  const snippet =
    hit.text.length > SNIPPET_CHARS ? `${hit.text.slice(0, SNIPPET_CHARS)}…` : hit.text;
  // each retriever's rank: where BM25 and the dense model put this passage before fusion
  const ranks = Object.entries(hit.ranks).map(([name, rank]) => `${name} #${rank}`);
  ranks.push(`score ${hit.score.toFixed(3)}`);
  return el(
    "li",
    { class: "result" },
    el(
      "a",
      { class: "title", href: documentHref(hit.doc_id, hit.line_start, hit.line_end) },
      hit.title,
    ),
    el(
      "div",
      { class: "meta" },
      el("span", { class: "path", title: hit.path }, hitLocation(hit)),
      " · ",
      wherePath(hit),
    ),
    el("p", { class: "snippet" }, snippet),
    el("div", { class: "ranks muted" }, ranks.join(" · ")),
  );
}

// --- one document ------------------------------------------------------------------------

function positiveInt(value) {
  const n = Number.parseInt(value ?? "", 10);
  return n >= 1 ? n : undefined;
}

const WINDOW = 2000; // lines shown above and below the cited ones

async function initDocument() {
  const article = $("#document");
  const id = Number(article.dataset.docId);
  const params = new URLSearchParams(window.location.search);
  const start = positiveInt(params.get("start"));
  const end = positiveInt(params.get("end")) ?? start;
  const listed = parseRanges(params.get("lines"));
  const ranges = listed.length ? listed : start ? [[start, Math.max(start, end)]] : [];
  // with cited lines, a window around them (a streamed CSV has millions of lines); the
  // server sends at most 20,000 lines of a document at once and says when it cut
  const windowEnd = ranges.length ? Math.max(...ranges.map((r) => r[1])) + WINDOW : 0;
  const around = ranges.length
    ? `?start=${Math.max(1, Math.min(...ranges.map((r) => r[0])) - WINDOW)}&end=${windowEnd}`
    : "";
  try {
    const [passage, documents] = await Promise.all([
      getJson(`/api/documents/${id}/text${around}`),
      getJson("/api/documents").catch(() => []),
      loadRoots(),
    ]);
    const info = documents.find((d) => d.id === id);
    const title = info?.title || shortPath(passage.path);
    document.title = `${title} · Sourcebook`;
    $("#document-title").textContent = title;
    // part of the document: lines before the window, or (maybe) after it
    const more = passage.truncated || (windowEnd > 0 && passage.line_end >= windowEnd);
    const shown =
      passage.line_start > 1 || more
        ? `${passage.line_start}–${passage.line_end} 行 lines${more ? " …" : ""}`
        : `${passage.line_end} 行 lines`;
    const meta = [shortPath(passage.path), shown];
    if (ranges.length) {
      meta.push(`高亮 highlighted ${ranges.map(([a, b]) => span(a, b)).join(", ")}`);
    }
    $("#document-meta").textContent = meta.join(" · ");
    $("#document-meta").title = passage.path;
    renderLines($("#document-lines"), passage.text, passage.line_start, ranges);
    linkNotes($("#document-lines"), await getJson(`/api/documents/${id}/links`).catch(() => []));
    const page = params.get("page");
    if (page) showPage($("#document-page"), id, positiveInt(page), ranges);
  } catch (error) {
    $("#document-lines").replaceChildren(errorNode(error));
  }
}

// [[note]] in a rendered note becomes a link to the note it names (the server resolves
// it), or is marked as naming no indexed note; only plain text is split, so links made
// before on the same line stay links
function linkNotes(container, links) {
  const done = new Set();
  for (const link of links) {
    const key = `${link.line} ${link.written}`;
    if (done.has(key)) continue; // every occurrence on the line is linked at once
    done.add(key);
    const line = container.querySelector(`[data-line="${link.line}"] .lt`);
    if (!line) continue;
    const missing = { class: "wikilink missing", title: `没有这篇笔记 no note named ${link.target}` };
    const found = { class: "wikilink", href: `/documents/${link.doc_id}`, title: link.path };
    const anchor = () =>
      link.doc_id === null ? el("span", missing, link.written) : el("a", found, link.written);
    for (const node of [...line.childNodes]) {
      if (node.nodeType !== Node.TEXT_NODE) continue;
      const pieces = node.textContent.split(link.written);
      if (pieces.length < 2) continue;
      node.replaceWith(...pieces.flatMap((piece, i) => (i ? [anchor(), piece] : [piece])));
    }
  }
}

const PAGES = {
  chat: initChat,
  documents: initDocuments,
  search: initSearch,
  document: initDocument,
};

PAGES[document.body.dataset.page]?.();
