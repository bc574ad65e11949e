// The app's own PDF viewer (templates/ingestion/pdf_viewer.html): PDF.js, vendored under
// static/vendor/pdfjs, renders pages to canvas with a text layer on top; the pages near the
// viewport are rendered, the others are placeholders. On the cited pages the cited passage
// (the chunk's text, from json_script) is found in the text layer and marked with <mark>.
//
// Matching: PDF text extraction and PDF.js disagree on spaces, line-break hyphens, ligatures,
// quotes and the order of columns, so both sides are reduced to letters and digits (NFKC,
// lower case) and compared piece by piece: the passage is cut into short pieces (12 Latin
// letters, 6 CJK characters), each piece is looked up on the page, and the longest chain of
// pieces found in passage order wins. A piece that differs leaves a hole that is filled when
// the page has about as much text there as the passage; a bigger jump (the other column, a
// page header) is not filled. Only characters of the winning chain are marked, so a passage
// in the right column never lights up the left one.

const root = document.getElementById("pdf-viewer");
const pagesEl = document.getElementById("pdf-pages");
const statusEl = document.getElementById("pdf-status");
const pageInput = document.getElementById("pdf-page-input");
const pageCountEl = document.getElementById("pdf-page-count");
const passage = JSON.parse(document.getElementById("pdf-passage").textContent) || "";

const PIECE_WEIGHT = 12; // a CJK character weighs 2: about two words or six characters
const MAX_OCCURRENCES = 40; // per piece; more means the piece says nothing
const GAP_PENALTY = 0.05; // per page character skipped beyond the passage's own gap
const RENDER_MARGIN = "1200px 0px"; // render pages this close to the viewport, drop the rest
const MAX_CANVAS_PIXELS = 4096 * 4096; // sharper than the screen costs memory, not clarity
const MAX_SCALE = 1.5; // fitted to the width, but no bigger than about 110% in PDF.js terms
const ZOOMS = [0.5, 0.75, 1, 1.25, 1.5, 2, 3];

const WORD = /[\p{L}\p{N}]/u;
const CJK = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}]/u;

function say(key) {
  statusEl.textContent = statusEl.dataset[key] || "";
  statusEl.dataset.state = key;
}

// Letters and digits only, each remembering where in `text` it came from.
function normalise(text) {
  const chars = [];
  const starts = [];
  const ends = [];
  for (let i = 0; i < text.length; ) {
    const ch = String.fromCodePoint(text.codePointAt(i));
    for (const c of ch.normalize("NFKC").toLowerCase()) {
      if (WORD.test(c)) {
        chars.push(c);
        starts.push(i);
        ends.push(i + ch.length);
      }
    }
    i += ch.length;
  }
  return {chars, starts, ends};
}

function cutPieces(chars) {
  const pieces = [];
  let start = 0;
  let weight = 0;
  for (let i = 0; i < chars.length; i++) {
    weight += CJK.test(chars[i]) ? 2 : 1;
    if (weight >= PIECE_WEIGHT) {
      pieces.push([start, i + 1]);
      start = i + 1;
      weight = 0;
    }
  }
  if (start < chars.length) {
    // A short tail would match anywhere: join it to the piece before.
    if (pieces.length && weight < PIECE_WEIGHT / 2) pieces[pieces.length - 1][1] = chars.length;
    else pieces.push([start, chars.length]);
  }
  return pieces;
}

// The page positions [start, end) of `passageChars` in `pageChars`, as a sorted list of ranges.
function locate(passageChars, pageChars) {
  const page = pageChars.join("");
  const pieces = cutPieces(passageChars);
  const nodes = []; // {p: piece index, ps, pe: passage range, ts, te: page range}
  pieces.forEach(([ps, pe], p) => {
    const needle = passageChars.slice(ps, pe).join("");
    const found = [];
    for (let at = page.indexOf(needle); at !== -1; at = page.indexOf(needle, at + 1)) {
      found.push(at);
      if (found.length > MAX_OCCURRENCES) return;
    }
    for (const ts of found) nodes.push({p, ps, pe, ts, te: ts + needle.length});
  });
  if (!nodes.length) return {ranges: [], matched: 0};
  // Longest chain in passage order and page order; a jump on the page that the passage does
  // not make costs a little, so a stray repeat of a phrase far away does not join the chain.
  const score = new Array(nodes.length);
  const prev = new Array(nodes.length).fill(-1);
  let best = 0;
  for (let j = 0; j < nodes.length; j++) {
    const b = nodes[j];
    score[j] = b.te - b.ts;
    for (let i = 0; i < j; i++) {
      const a = nodes[i];
      if (a.p >= b.p || a.te > b.ts) continue;
      const extra = Math.max(0, b.ts - a.te - (b.ps - a.pe));
      const s = score[i] + (b.te - b.ts) - GAP_PENALTY * extra;
      if (s > score[j]) {
        score[j] = s;
        prev[j] = i;
      }
    }
    if (score[j] > score[best]) best = j;
  }
  const chain = [];
  for (let j = best; j !== -1; j = prev[j]) chain.unshift(nodes[j]);
  // Pieces are cut blindly, so the characters at the passage's ends (and next to a piece that
  // differed) sit in pieces that did not match: grow each piece while page and passage agree.
  chain.forEach((node, i) => {
    const before = chain[i - 1] || {te: 0, pe: 0};
    const after = chain[i + 1] || {ts: pageChars.length, ps: passageChars.length};
    while (
      node.ts > before.te &&
      node.ps > before.pe &&
      pageChars[node.ts - 1] === passageChars[node.ps - 1]
    ) {
      node.ts -= 1;
      node.ps -= 1;
    }
    while (node.te < after.ts && node.pe < after.ps && pageChars[node.te] === passageChars[node.pe]) {
      node.te += 1;
      node.pe += 1;
    }
  });
  const ranges = [];
  let matched = 0;
  for (const node of chain) {
    matched += node.te - node.ts;
    const last = ranges[ranges.length - 1];
    const gap = last ? node.ts - last.end : 0;
    const passageGap = last ? node.ps - last.pe : 0;
    // Fill a hole where a piece differed, when the page has about as much text there.
    if (last && gap <= passageGap * 1.5 + 8) {
      last.end = node.te;
      last.pe = node.pe;
    } else {
      ranges.push({start: node.ts, end: node.te, pe: node.pe});
    }
  }
  return {ranges: ranges.map((r) => [r.start, r.end]), matched};
}

// Wraps the part of each text-layer span that the ranges cover in <mark>. Spaces and
// punctuation are not compared, so they are marked when the text on both sides is.
function markSpans(spans, passageChars) {
  const pageChars = [];
  const parts = spans.map((span) => {
    const n = normalise(span.textContent);
    const part = {first: pageChars.length, ...n};
    pageChars.push(...n.chars);
    return part;
  });
  const {ranges, matched} = locate(passageChars, pageChars);
  // Too little of the passage on this page to be it (a page_end page holds only the tail).
  if (matched < Math.min(passageChars.length * 0.3, 24)) return [];
  const covered = new Uint8Array(pageChars.length + 1);
  for (const [start, end] of ranges) covered.fill(1, start, end);
  const marks = [];
  spans.forEach((span, s) => {
    const {first, chars, starts, ends} = parts[s];
    const text = span.textContent;
    const coveredBefore = first > 0 && covered[first - 1] === 1;
    const coveredAfter = covered[first + chars.length] === 1;
    let from = -1;
    let to = -1;
    for (let k = 0; k < chars.length; k++) {
      if (!covered[first + k]) continue;
      if (from === -1) from = k === 0 && coveredBefore ? 0 : starts[k];
      to = k === chars.length - 1 && coveredAfter ? text.length : ends[k];
    }
    if (!chars.length && coveredBefore && coveredAfter) [from, to] = [0, text.length];
    if (from === -1) return;
    const mark = document.createElement("mark");
    mark.className = "pdf-mark";
    mark.textContent = text.slice(from, to);
    span.textContent = "";
    span.append(text.slice(0, from), mark, text.slice(to));
    marks.push(mark);
  });
  return marks;
}

function clampPage(n, count) {
  return Math.min(Math.max(1, Number.isFinite(n) ? n : 1), count);
}

async function main() {
  const base = root.dataset.pdfjs;
  const pdfjs = await import(`${base}pdf.min.mjs`);
  pdfjs.GlobalWorkerOptions.workerSrc = `${base}pdf.worker.min.mjs`;
  const pdf = await pdfjs.getDocument({
    url: root.dataset.fileUrl,
    cMapUrl: `${base}cmaps/`, // Chinese and other CID fonts
    cMapPacked: true,
    standardFontDataUrl: `${base}standard_fonts/`,
    wasmUrl: `${base}wasm/`,
    iccUrl: `${base}iccs/`,
    isEvalSupported: false, // the page's policy allows no eval
    enableXfa: false,
  }).promise;

  const count = pdf.numPages;
  pageCountEl.textContent = String(count);
  pageInput.max = String(count);
  const first = clampPage(parseInt(root.dataset.page, 10), count);
  const last = clampPage(parseInt(root.dataset.pageEnd, 10) || first, count);
  const passageChars = normalise(passage).chars;
  const cited = new Map(); // page number -> marks found there
  let scrolledToMark = false;

  const sizes = new Map();
  const slots = [];
  let scale = 1;
  let zoom = 1; // times the fitted width
  const defaultSize = (await pdf.getPage(first)).getViewport({scale: 1});

  function fitScale(width) {
    return Math.min(MAX_SCALE, (pagesEl.clientWidth - 2) / width);
  }

  function sizeSlot(slot) {
    const size = sizes.get(slot.number) || defaultSize;
    slot.div.style.width = `${Math.floor(size.width * scale)}px`;
    slot.div.style.height = `${Math.floor(size.height * scale)}px`;
  }

  function release(slot) {
    slot.generation += 1;
    slot.task?.cancel();
    slot.textLayer?.cancel();
    slot.page?.cleanup();
    slot.div.replaceChildren();
    delete slot.div.dataset.rendered;
    slot.rendered = false;
    slot.task = slot.textLayer = slot.page = null;
  }

  async function render(slot) {
    if (slot.rendered) return;
    slot.rendered = true;
    const generation = slot.generation;
    const page = await pdf.getPage(slot.number);
    if (generation !== slot.generation) return;
    slot.page = page;
    const viewport = page.getViewport({scale});
    sizes.set(slot.number, page.getViewport({scale: 1}));
    sizeSlot(slot);
    slot.div.style.setProperty("--scale-factor", String(viewport.scale));
    slot.div.style.setProperty("--user-unit", String(viewport.userUnit || 1));
    const ratio = Math.min(
      window.devicePixelRatio || 1,
      Math.sqrt(MAX_CANVAS_PIXELS / (viewport.width * viewport.height)),
    );
    const canvas = document.createElement("canvas");
    canvas.width = Math.floor(viewport.width * ratio);
    canvas.height = Math.floor(viewport.height * ratio);
    canvas.style.width = `${Math.floor(viewport.width)}px`;
    canvas.style.height = `${Math.floor(viewport.height)}px`;
    const layer = document.createElement("div");
    layer.className = "textLayer";
    slot.div.replaceChildren(canvas, layer);
    slot.task = page.render({
      canvasContext: canvas.getContext("2d"),
      canvas,
      viewport,
      transform: ratio === 1 ? null : [ratio, 0, 0, ratio, 0, 0],
    });
    slot.textLayer = new pdfjs.TextLayer({
      textContentSource: page.streamTextContent(),
      container: layer,
      viewport,
    });
    try {
      await Promise.all([slot.task.promise, slot.textLayer.render()]);
    } catch (error) {
      if (error?.name === "RenderingCancelledException" || error?.name === "AbortException") return;
      throw error;
    }
    if (generation !== slot.generation) return;
    slot.div.dataset.rendered = "true";
    if (passageChars.length && slot.number >= first && slot.number <= last) {
      const spans = slot.textLayer.textDivs.filter((span) => span.isConnected && span.textContent);
      cited.set(slot.number, markSpans(spans, passageChars));
      reportCited();
    }
  }

  // Scrolls to the first mark once the cited page is done (the passage may go on to page_end).
  function reportCited() {
    if (scrolledToMark || !cited.has(first)) return;
    const pages = [...cited.keys()].sort((a, b) => a - b);
    const marks = pages.flatMap((number) => cited.get(number));
    if (marks.length) {
      scrolledToMark = true;
      marks[0].scrollIntoView({block: "center"});
      say("found");
    } else if (pages.length === last - first + 1) {
      say("notFound");
    } else {
      // Not on the cited page: the rest may be on the next, even if that is out of sight.
      for (let number = first + 1; number <= last; number++) render(slots[number - 1]).catch(fail);
    }
  }

  const observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        const slot = slots[Number(entry.target.dataset.pageNumber) - 1];
        if (entry.isIntersecting) render(slot).catch(fail);
        else if (slot.rendered) release(slot);
      }
    },
    {rootMargin: RENDER_MARGIN},
  );

  function layout() {
    scale = fitScale(defaultSize.width) * zoom;
    for (const slot of slots) {
      if (slot.rendered) release(slot);
      sizeSlot(slot);
    }
    // Observing again reports every page afresh, so the visible ones render at the new scale.
    observer.disconnect();
    for (const slot of slots) observer.observe(slot.div);
  }

  // Lays the pages out again, keeping the point under the middle of the window in place.
  function relayout() {
    const middle = window.innerHeight / 2;
    const here = slots[currentPage() - 1].div;
    const before = here.getBoundingClientRect();
    const fraction = (middle - before.top) / before.height;
    scrolledToMark = true; // the reader has moved on: keep their place, not the passage
    layout();
    const after = here.getBoundingClientRect();
    window.scrollBy(0, after.top + fraction * after.height - middle);
  }

  for (let number = 1; number <= count; number++) {
    const div = document.createElement("div");
    div.className = "pdf-page";
    div.dataset.pageNumber = String(number);
    div.setAttribute("aria-label", `${number} / ${count}`);
    slots.push({number, div, rendered: false, generation: 0, page: null, task: null, textLayer: null});
    pagesEl.append(div);
  }
  // Pages scrolled to their top stop below the sticky toolbar (scroll-margin-top in the CSS).
  const toolbar = root.querySelector(".pdf-toolbar");
  new ResizeObserver(() => {
    root.style.setProperty("--pdf-toolbar-height", `${toolbar.offsetHeight}px`);
  }).observe(toolbar);
  root.style.setProperty("--pdf-toolbar-height", `${toolbar.offsetHeight}px`);
  layout();
  goTo(first);
  if (!passageChars.length) statusEl.textContent = "";

  function goTo(number) {
    const slot = slots[clampPage(number, count) - 1];
    slot.div.scrollIntoView({block: "start"});
    pageInput.value = String(slot.number);
  }

  // The page under the middle of the window: where a mark scrolled to the centre is.
  function currentPage() {
    const middle = window.innerHeight / 2;
    for (const slot of slots) {
      if (slot.div.getBoundingClientRect().bottom >= middle) return slot.number;
    }
    return count;
  }

  let ticking = false;
  window.addEventListener("scroll", () => {
    if (ticking) return;
    ticking = true;
    requestAnimationFrame(() => {
      ticking = false;
      if (document.activeElement !== pageInput) pageInput.value = String(currentPage());
    });
  });
  document.getElementById("pdf-prev").addEventListener("click", () => goTo(currentPage() - 1));
  document.getElementById("pdf-next").addEventListener("click", () => goTo(currentPage() + 1));
  pageInput.addEventListener("change", () => goTo(parseInt(pageInput.value, 10)));

  document.getElementById("pdf-zoom-in").addEventListener("click", () => {
    zoom = ZOOMS.find((z) => z > zoom) || zoom;
    relayout();
  });
  document.getElementById("pdf-zoom-out").addEventListener("click", () => {
    zoom = ZOOMS.findLast((z) => z < zoom) || zoom;
    relayout();
  });

  let lastWidth = pagesEl.clientWidth;
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (pagesEl.clientWidth === lastWidth) return;
      lastWidth = pagesEl.clientWidth;
      relayout();
    }, 200);
  });
}

function fail(error) {
  console.error(error);
  say("failed");
}

main().catch(fail);
