"""The explain page: one HTML file with its CSS, script and data inline, so it opens offline from disk.

The script reads the JSON block written by :func:`bertkit.inspect.explain.page_data` and draws
everything in the browser: the sub-word chips (WordPiece, byte-level BPE or SentencePiece), one attention
heat map on a canvas (layer and head chosen with controls or by clicking a thumbnail; hovering a cell shows
the two tokens and the weight), the token / id / embedding-norm table and the fill-mask guesses. The main
canvas carries ``data-layer`` and ``data-head`` so a test can see which map is shown.
"""

from __future__ import annotations

import html
import json
from typing import Any

STYLE = """
:root { --ink: #1d2430; --muted: #5d6778; --line: #e3e7ee; --bg: #f5f7fa; --a: #1f5fa8; --b: #b5541c;
        --accent: #0b6e4f; --warn: #8a5a00; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { background: #17212f; color: #fff; padding: 20px 32px; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header p { margin: 4px 0 0; color: #b8c3d3; }
header #sentences { color: #fff; font-size: 16px; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 48px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 16px 20px; margin: 16px 0;
        box-shadow: 0 1px 2px rgba(20, 30, 50, .05); }
h2 { margin: 0 0 10px; font-size: 17px; }
h3 { margin: 14px 0 6px; font-size: 14px; color: var(--muted); font-weight: 600; }
.hint { color: var(--muted); font-size: 13px; margin: 8px 0 0; }
.notice { border-radius: 8px; padding: 10px 14px; margin: 12px 0; border: 1px solid; }
.notice.warn { background: #fff7e6; border-color: #f0c36d; color: var(--warn); }
.notice.info { background: #eef5ff; border-color: #b7d0f2; color: #244a7a; }
.pieces { display: flex; flex-wrap: wrap; gap: 6px 4px; }
.chip { font: 13px/1 ui-monospace, "DejaVu Sans Mono", monospace; padding: 6px 8px; border-radius: 6px;
        background: #eaf1fb; border: 1px solid #c9dbf3; color: var(--a); }
.chip.seg1 { background: #fbefe7; border-color: #f0d0bb; color: var(--b); }
.chip.special { background: #eef0f3; border-color: #d6dae1; color: var(--muted); }
.chip.cont { margin-left: -3px; border-left-style: dashed; }
.chip sub { color: var(--muted); font-size: 10px; margin-left: 3px; }
.controls { display: flex; flex-wrap: wrap; gap: 18px; align-items: center; margin-bottom: 12px; }
.controls select { font: inherit; padding: 3px 6px; border-radius: 6px; border: 1px solid #c5ccd8; }
.attn { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.mapwrap { position: relative; }
#map { display: block; cursor: crosshair; }
.tip { position: absolute; pointer-events: none; background: #17212f; color: #fff; padding: 6px 9px;
       border-radius: 6px; font-size: 13px; white-space: nowrap; box-shadow: 0 2px 8px rgba(0, 0, 0, .25); }
.side { flex: 1; min-width: 240px; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(78px, 1fr)); gap: 8px; }
.thumb { border: 2px solid transparent; border-radius: 6px; padding: 2px; background: none; cursor: pointer;
         font: 12px system-ui, sans-serif; color: var(--muted); }
.thumb canvas { display: block; width: 70px; height: 70px; image-rendering: pixelated; border: 1px solid var(--line); }
.thumb.on { border-color: var(--a); color: var(--a); font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: middle; }
th { color: var(--muted); font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
td.tok { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.bar { position: relative; height: 16px; min-width: 120px; background: #f0f2f6; border-radius: 3px; }
.bar span { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 3px; }
.bar em { position: absolute; right: 4px; top: 0; font: 11px/16px system-ui, sans-serif; color: var(--ink); }
.bar.token span { background: #8fb5e3; } .bar.segment span { background: #f0b48f; }
.bar.position span { background: #9fd3b8; }
.guess { display: inline-block; margin: 2px 4px 2px 0; padding: 2px 7px; border-radius: 5px; background: #f0f2f6;
         font: 12px ui-monospace, "DejaVu Sans Mono", monospace; }
.guess.hit { background: #dff3e8; color: var(--accent); font-weight: 600; }
.guess b { font-weight: 400; color: var(--muted); margin-left: 4px; }
"""

SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const T = D.length, L = D.layers, H = D.heads;
const att = (() => {
  const raw = atob(D.attention), bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return new Uint16Array(bytes.buffer);
})();
const weight = (l, h, i, j) => att[((l * H + h) * T + i) * T + j] / 65535;
const STOPS = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
function colour(v) {
  v = Math.min(1, Math.max(0, v));
  const x = v * (STOPS.length - 1), k = Math.min(Math.floor(x), STOPS.length - 2), f = x - k;
  return STOPS[k].map((c, n) => Math.round(c + (STOPS[k + 1][n] - c) * f));
}
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const short = t => t.length > 14 ? t.slice(0, 13) + '\\u2026' : t;
const state = { layer: 0, head: 0, hover: null };

function mapMax(l, h) {
  let m = 0;
  for (let i = 0; i < T * T; i++) m = Math.max(m, att[(l * H + h) * T * T + i]);
  return Math.max(m / 65535, 1e-6);
}
function mapImage(l, h) {
  const c = document.createElement('canvas');
  c.width = T; c.height = T;
  const ctx = c.getContext('2d'), img = ctx.createImageData(T, T);
  const scale = document.getElementById('stretch').checked ? mapMax(l, h) : 1;
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
    const [r, g, b] = colour(weight(l, h, i, j) / scale), p = 4 * (i * T + j);
    img.data[p] = r; img.data[p + 1] = g; img.data[p + 2] = b; img.data[p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return [c, scale];
}

const map = document.getElementById('map'), mctx = map.getContext('2d');
const FONT = '12px ui-monospace, "DejaVu Sans Mono", monospace';
mctx.font = FONT;
const CELL = Math.max(1, Math.min(34, Math.floor(620 / T)));
const STEP = Math.ceil(13 / CELL);  // label every STEP-th token when cells are smaller than the text
const MARGIN = 12 + Math.max(...D.tokens.map(t => mctx.measureText(short(t)).width));
const SIZE = MARGIN + T * CELL + 8, DPR = window.devicePixelRatio || 1;
map.width = SIZE * DPR; map.height = SIZE * DPR;
map.style.width = SIZE + 'px'; map.style.height = SIZE + 'px';
let image = null, imageScale = 1;
const labelColour = i => D.special[i] ? '#7a8496' : (D.typeIds[i] ? '#b5541c' : '#1f5fa8');

function drawMap() {
  const ctx = mctx;
  ctx.setTransform(DPR, 0, 0, DPR, 0, 0);
  ctx.clearRect(0, 0, SIZE, SIZE);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(image, MARGIN, MARGIN, T * CELL, T * CELL);
  ctx.font = FONT; ctx.textBaseline = 'middle';
  for (let i = 0; i < T; i += STEP) {
    const hot = state.hover && (state.hover[0] === i || state.hover[1] === i);
    ctx.fillStyle = hot ? '#000' : labelColour(i);
    ctx.textAlign = 'right';
    ctx.fillText(short(D.tokens[i]), MARGIN - 6, MARGIN + (i + 0.5) * CELL);
    ctx.save();
    ctx.translate(MARGIN + (i + 0.5) * CELL, MARGIN - 6);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = 'left';
    ctx.fillText(short(D.tokens[i]), 0, 0);
    ctx.restore();
  }
  ctx.strokeStyle = '#c5ccd8'; ctx.lineWidth = 1;
  ctx.strokeRect(MARGIN - 0.5, MARGIN - 0.5, T * CELL + 1, T * CELL + 1);
  if (state.hover) {
    const [i, j] = state.hover;
    ctx.strokeStyle = 'rgba(181, 84, 28, .55)';
    ctx.strokeRect(MARGIN, MARGIN + i * CELL, T * CELL, CELL);
    ctx.strokeRect(MARGIN + j * CELL, MARGIN, CELL, T * CELL);
    ctx.strokeStyle = '#b5541c'; ctx.lineWidth = 2;
    ctx.strokeRect(MARGIN + j * CELL, MARGIN + i * CELL, CELL, CELL);
  }
}

function drawLegend() {
  const c = document.getElementById('legend-bar'), ctx = c.getContext('2d');
  for (let x = 0; x < c.width; x++) {
    const [r, g, b] = colour(x / (c.width - 1));
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, 0, 1, c.height);
  }
  document.getElementById('legend-max').textContent = imageScale.toFixed(imageScale < 0.1 ? 3 : 2);
}

function buildThumbs() {
  const box = document.getElementById('thumbs');
  box.replaceChildren();
  for (let h = 0; h < H; h++) {
    const b = el('button', 'thumb' + (h === state.head ? ' on' : ''));
    b.type = 'button'; b.dataset.head = h;
    const c = el('canvas');
    c.width = T; c.height = T;
    c.getContext('2d').drawImage(mapImage(state.layer, h)[0], 0, 0);
    b.append(c, el('div', '', 'head ' + h));
    b.addEventListener('click', () => select(state.layer, h));
    box.append(b);
  }
}

function select(layer, head) {
  const layerChanged = layer !== state.layer;
  state.layer = layer; state.head = head;
  document.getElementById('layer').value = layer;
  document.getElementById('head').value = head;
  [image, imageScale] = mapImage(layer, head);
  map.dataset.layer = layer; map.dataset.head = head;
  if (layerChanged || !document.getElementById('thumbs').children.length) buildThumbs();
  for (const b of document.querySelectorAll('.thumb')) b.classList.toggle('on', Number(b.dataset.head) === head);
  drawMap(); drawLegend();
}

function hover(ev) {
  const r = map.getBoundingClientRect(), tip = document.getElementById('tip');
  const j = Math.floor((ev.clientX - r.left - MARGIN) / CELL), i = Math.floor((ev.clientY - r.top - MARGIN) / CELL);
  if (i < 0 || j < 0 || i >= T || j >= T) { leave(); return; }
  state.hover = [i, j];
  const w = weight(state.layer, state.head, i, j);
  tip.replaceChildren(el('b', '', D.tokens[i]), ' \\u2192 ', el('b', '', D.tokens[j]),
    el('br'), `weight ${w.toFixed(4)} \\u00b7 layer ${state.layer} head ${state.head}`);
  tip.hidden = false;
  tip.style.left = (ev.clientX - r.left + 14) + 'px';
  tip.style.top = (ev.clientY - r.top + 14) + 'px';
  drawMap();
}
function leave() {
  document.getElementById('tip').hidden = true;
  if (state.hover) { state.hover = null; drawMap(); }
}

function fillControls() {
  const layer = document.getElementById('layer'), head = document.getElementById('head');
  for (let l = 0; l < L; l++) layer.append(new Option(String(l), l));
  for (let h = 0; h < H; h++) head.append(new Option(String(h), h));
  layer.addEventListener('change', () => select(Number(layer.value), state.head));
  head.addEventListener('change', () => select(state.layer, Number(head.value)));
  document.getElementById('stretch').addEventListener('change', () => {
    buildThumbs(); select(state.layer, state.head);
  });
  map.addEventListener('mousemove', hover);
  map.addEventListener('mouseleave', leave);
}

function fillHeader() {
  document.getElementById('subtitle').textContent =
    `${D.model} \\u00b7 ${T} tokens \\u00b7 ${L} layers \\u00d7 ${H} heads`;
  const clip = t => t.length > 160 ? t.slice(0, 159) + '\u2026' : t;
  const sentences = document.getElementById('sentences');
  sentences.textContent = `\u201c${clip(D.text)}\u201d` + (D.pair === null ? '' : `  +  \u201c${clip(D.pair)}\u201d`);
  sentences.title = D.pair === null ? D.text : `${D.text}\n${D.pair}`;
  const notes = document.getElementById('notices');
  if (D.truncated) notes.append(el('div', 'notice warn', D.truncated.note.charAt(0).toUpperCase()
    + D.truncated.note.slice(1) + `. Everything below describes the first ${D.truncated.to} tokens.`));
  document.getElementById('split-title').textContent = `${D.scheme} split`;
  const pieces = document.getElementById('pieces');
  D.tokens.forEach((t, i) => {
    const c = el('span', 'chip' + (D.special[i] ? ' special' : '') + (D.typeIds[i] ? ' seg1' : '')
      + (D.continues[i] ? ' cont' : ''), t);
    c.title = `position ${D.positions[i]} \\u00b7 id ${D.ids[i]} \\u00b7 segment ${D.typeIds[i]}`;
    c.append(el('sub', '', String(i)));
    pieces.append(c);
  });
}

function barCell(kind, value, top) {
  const td = el('td'), bar = el('div', 'bar ' + kind), fill = el('span');
  fill.style.width = (100 * value / top).toFixed(1) + '%';
  bar.append(fill, el('em', '', value.toFixed(2)));
  td.append(bar);
  return td;
}

function fillTable() {
  const body = document.querySelector('#tokens tbody'), head = document.querySelector('#tokens thead tr');
  const kinds = ['token', 'segment', 'position'].filter(k => k in D.norms);  // DistilBERT has no segment table
  for (const k of kinds) head.append(el('th', '', `\\u2016${k}\\u2016`));
  const top = Math.max(1e-6, ...kinds.flatMap(k => D.norms[k]));
  D.tokens.forEach((t, i) => {
    const tr = el('tr');
    tr.append(el('td', 'num', String(i)), el('td', 'tok', t), el('td', 'num', String(D.ids[i])),
      el('td', 'num', String(D.typeIds[i])), el('td', 'num', String(D.positions[i])));
    for (const k of kinds) tr.append(barCell(k, D.norms[k][i], top));
    body.append(tr);
  });
}

function fillMlm() {
  const box = document.getElementById('mlm');
  if (!D.mlm) {
    box.append(el('div', 'notice info', 'This checkpoint has no masked-LM head (no cls.predictions.* weights), '
      + 'so there are no fill-mask predictions. The attention maps and embeddings above come from the encoder '
      + 'and are complete.'));
    return;
  }
  box.append(el('p', 'hint', D.mlm.mode === 'each'
    ? 'Each token was replaced by [MASK] in turn (one forward pass per token); these are the model\\'s top '
      + 'guesses. A green guess is the original token.'
    : 'The model\\'s top guesses at each [MASK] of the input.'));
  const table = el('table'), head = el('tr');
  head.append(el('th', '', '#'), el('th', '', 'token'), el('th', '', 'top guesses (probability)'));
  table.append(head);
  for (const g of D.mlm.guesses) {
    const tr = el('tr'), cell = el('td');
    for (const [tok, p] of g.candidates) {
      const chip = el('span', 'guess' + (tok === g.token ? ' hit' : ''), tok);
      chip.append(el('b', '', p.toFixed(3)));
      cell.append(chip);
    }
    tr.append(el('td', 'num', String(g.position)), el('td', 'tok', g.token), cell);
    table.append(tr);
  }
  box.append(table);
}

// Long inputs spread attention thinly; on a fixed 0-1 scale their maps would look empty.
document.getElementById('stretch').checked = T > 48;
fillHeader(); fillTable(); fillMlm(); fillControls();
select(0, 0);
document.body.dataset.ready = '1';
"""

BODY = """
<header><h1>Inside the model</h1><p id="sentences"></p><p id="subtitle"></p></header>
<main>
<div id="notices"></div>
<section class="card"><h2 id="split-title">Sub-word split</h2>
<div id="pieces" class="pieces"></div>
<p class="hint">Blue: first segment (type id 0); orange: second segment (type id 1); grey: special tokens; a dashed
left edge marks a piece that continues the previous word. The small number is the token's index.</p>
</section>
<section class="card"><h2>Attention</h2>
<div class="controls">
<label>Layer <select id="layer"></select></label>
<label>Head <select id="head"></select></label>
<label><input type="checkbox" id="stretch"> stretch colours to this map's largest weight</label>
</div>
<div class="attn">
<div class="mapwrap"><canvas id="map"></canvas><div id="tip" class="tip" hidden></div></div>
<div class="side">
<h3>Colour scale</h3>
<div><canvas id="legend-bar" width="220" height="12"></canvas></div>
<div class="hint" style="display:flex;justify-content:space-between;width:220px;margin:0">
<span>0</span><span id="legend-max">1</span></div>
<h3>All heads of this layer (click to show)</h3>
<div id="thumbs" class="thumbs"></div>
</div>
</div>
<p class="hint">Row <i>i</i> is the token doing the looking (the query); its weights over the columns (the keys)
sum to 1. Hover a cell to read the weight and the two tokens.</p>
</section>
<section class="card"><h2>Tokens, ids and the embedding parts</h2>
<p class="hint" style="margin:0 0 8px">A token's input to the first layer is the sum of its token, segment and
position embeddings (then LayerNorm; a model without token types, such as DistilBERT, has no segment part, and
ALBERT's parts are narrower than the hidden size, which a projection reaches). The bars give the L2 norm of each
part, on one shared scale; the position column is the row of the position table the model reads.</p>
<table id="tokens"><thead><tr><th>#</th><th>token</th><th>id</th><th>segment</th><th>position</th></tr></thead>
<tbody></tbody></table>
</section>
<section class="card"><h2>Fill-mask</h2><div id="mlm"></div></section>
</main>
"""


def render_page(data: dict[str, Any], title: str) -> str:
    """The whole page as one string. ``data`` is embedded as JSON with ``<`` escaped, so text cannot end the script."""
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style></head>\n<body>{BODY}"
        f"<script type=\"application/json\" id=\"data\">{payload}</script>\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
