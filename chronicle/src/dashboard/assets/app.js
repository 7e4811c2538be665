'use strict';
// Chronicle dashboard. All data is hostile: only textContent / attributes, never innerHTML.
const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get('token');
let controls = false;
let lastStats = null;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k === 'title') e.title = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : String(k));
  return e;
}

async function api(path, method, body) {
  const headers = {};
  if (TOKEN) headers.Authorization = 'Bearer ' + TOKEN;
  const init = { method: method || 'GET', headers };
  if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!res.ok) throw new Error((data && typeof data.error === 'string') ? data.error : `HTTP ${res.status}: ${text.slice(0, 200)}`);
  return data;
}

// ---------- formatting ----------
// `null`: a count this view does not know (a database does not know what was sampled out).
const int = (n) => (n == null ? '—' : String(Math.round(Number(n) || 0)));
function dur(ns) {
  if (ns == null || !isFinite(ns)) return '—';
  const p = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  if (ns < 1e3) return Math.round(ns) + ' ns';
  if (ns < 1e6) return p(ns / 1e3) + ' µs';
  if (ns < 1e9) return p(ns / 1e6) + ' ms';
  return p(ns / 1e9) + ' s';
}
function clock(ts) {
  const d = new Date(ts);
  if (isNaN(d)) return String(ts ?? '');
  return d.toTimeString().slice(0, 8) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}
function uptime(s) {
  s = Math.floor(Number(s) || 0);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
  return h ? `${h}h ${String(m).padStart(2, '0')}m` : m ? `${m}m ${String(r).padStart(2, '0')}s` : `${r}s`;
}
const json = (v) => { try { return JSON.stringify(v) ?? 'undefined'; } catch (_) { return String(v); } };
function setText(node, text, title) {
  if (node.textContent !== text) node.textContent = text;
  if (title !== undefined && node.title !== title) node.title = title;
}

// ---------- rendering ----------
function render(s) {
  lastStats = s;
  setText($('source'), String(s.source ?? ''));
  const live = s.mode === 'live';
  setText($('mode'), live ? 'live' : 'read-only');
  $('mode').className = 'badge ' + (live ? 'live' : 'store');
  setText($('uptime'), uptime(s.uptime_s), `${Number(s.uptime_s || 0).toFixed(1)} s`);
  setControls(!!s.controls);

  const t = s.totals || {};
  for (const k of ['calls', 'stored', 'sampled_out', 'limited', 'dropped', 'errors']) {
    setText($('total-' + k), int(t[k]), Number(t[k] || 0).toLocaleString());
  }
  $('card-dropped').classList.toggle('warn', Number(t.dropped) > 0);
  $('card-errors').classList.toggle('bad', Number(t.errors) > 0);

  renderFunctions(s.functions || []);
  renderTypeLimits(s.type_limits || []);
  renderAlerts(s.alerts || []);
  renderRecent(s.recent || []);
  drawChart();
}

// Rows are kept and updated in place (keyed by data-id) so buttons stay clickable between updates.
function keyedRows(body, items, keyOf, make, update, emptyText) {
  const old = new Map([...body.rows].map((r) => [r.dataset.id, r]));
  for (const item of items) {
    const id = keyOf(item), row = old.get(id) || make(item);
    row.dataset.id = id;
    old.delete(id);
    update(row, item);
    row.querySelector('button').disabled = !controls;
    body.append(row); // moves existing rows into the server's order
  }
  for (const r of old.values()) r.remove();
  const cols = body.parentElement.tHead.rows[0].cells.length;
  if (!items.length) body.replaceChildren(el('tr', {}, el('td', { class: 'l empty', colspan: cols }, emptyText)));
}
function resetButton(body) {
  const btn = el('button', { type: 'button' }, 'reset');
  btn.addEventListener('click', () => reset(body));
  return btn;
}

const FN_INT = ['calls', 'seen', 'sampled_out', 'limited', 'stored', 'dropped', 'errors'];
function renderFunctions(fns) {
  keyedRows($('functions'), fns, (f) => String(f.name), (f) => el('tr', { 'data-function': String(f.name) },
    el('td', { class: 'name mono' }, String(f.name)),
    ...[...FN_INT, 'error_rate', 'p50', 'p99', 'limit'].map((k) => el('td', { 'data-field': k })),
    el('td', {}, resetButton({ function: f.name }))), (row, f) => {
    const cell = (k) => row.querySelector(`td[data-field="${k}"]`);
    for (const k of FN_INT) setText(cell(k), int(f[k]), Number(f[k] || 0).toLocaleString());
    cell('dropped').classList.toggle('warn', Number(f.dropped) > 0);
    cell('errors').classList.toggle('bad', Number(f.errors) > 0);
    setText(cell('error_rate'), (100 * (Number(f.error_rate) || 0)).toFixed(2) + '%');
    const lat = f.latency_ns, lim = f.limit;
    setText(cell('p50'), dur(lat && lat.p50), lat ? `p90 ${dur(lat.p90)}, max ${dur(lat.max)}, ${int(lat.samples)} samples` : '');
    setText(cell('p99'), dur(lat && lat.p99));
    setText(cell('limit'), lim ? `${int(lim.stored)}/${int(lim.limit)}${lim.reached ? ' ⚠' : ''}` : '—',
      lim ? `action when reached: ${lim.action}` : 'no per-function limit');
    cell('limit').classList.toggle('warn', !!(lim && lim.reached));
  }, 'no functions yet');
}

function renderTypeLimits(list) {
  keyedRows($('type-limits'), list, (t) => `${t.function}\n${t.key}`, (t) => el('tr', { 'data-type-key': String(t.key), 'data-type-function': String(t.function) },
    el('td', { class: 'name mono' }, String(t.function)), el('td', { class: 'name mono' }, String(t.key)), el('td'),
    el('td', {}, resetButton({ function: t.function, key: t.key }))), (row, t) => {
    row.cells[1].title = 'field ' + String(t.field_path);
    setText(row.cells[2], `${int(t.stored)}/${int(t.limit)}${t.reached ? ' ⚠' : ''}`);
    row.cells[2].classList.toggle('warn', !!t.reached);
  }, 'no type limits');
}

function renderAlerts(alerts) {
  const items = alerts.slice().reverse().map((a) => el('li', {},
    el('span', { class: 'when', title: String(a.timestamp) }, clock(a.timestamp)),
    el('span', { class: 'kind' }, String(a.kind ?? '')), String(a.message ?? '')));
  if (!items.length) items.push(el('li', { class: 'empty' }, 'no alerts'));
  $('alerts').replaceChildren(...items);
}

function jsonCell(v) {
  const text = json(v);
  if (text.length <= 80) return el('td', { class: 'l' }, el('code', { title: text }, text));
  return el('td', { class: 'l' }, el('details', {}, el('summary', { title: text }, text.slice(0, 80) + '…'),
    el('pre', {}, JSON.stringify(v, null, 2))));
}
function renderRecent(recent) {
  const body = $('recent');
  const key = (c) => `${c.id ?? ''}|${c.timestamp}|${c.function}|${c.duration_ns}`;
  const open = new Set([...body.querySelectorAll('tr')].filter((r) => r.querySelector('details[open]')).map((r) => r.dataset.key));
  const rows = recent.map((c) => {
    const st = String(c.status ?? ''), k = key(c);
    const row = el('tr', { 'data-key': k, class: 'call st-row-' + st },
      el('td', { class: 'l mono', title: String(c.timestamp) }, clock(c.timestamp)),
      el('td', { class: 'l fn mono' }, String(c.function)),
      el('td', { class: 'l' }, el('span', { class: 'st st-' + st }, st)),
      el('td', {}, dur(c.duration_ns)),
      jsonCell(c.args),
      c.return == null ? el('td', { class: 'l muted' }, '—') : jsonCell(c.return));
    if (open.has(k)) row.querySelectorAll('details').forEach((d) => { d.open = true; });
    return row;
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { class: 'l empty', colspan: 6 }, 'no calls yet')));
  body.replaceChildren(...rows);
}

function drawChart() {
  const canvas = $('chart'), box = canvas.parentElement;
  const dpr = window.devicePixelRatio || 1, w = box.clientWidth, h = box.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement), v = (n) => css.getPropertyValue(n).trim();
  const series = (lastStats && lastStats.series) || {};
  const step = Number(series.interval_s) || 1;
  // The live view's newest point is the second still being counted: leave it out.
  const all = (series.points || []).slice(0, lastStats && lastStats.mode === 'live' ? -1 : undefined);
  const end = all.length ? Number(all[all.length - 1].t) : Date.now() / 1000;
  // From one to five minutes, as much as there is.
  const span = Math.min(300, Math.max(60, all.length ? end - Number(all[0].t) : 0));
  const pts = all.filter((p) => Number(p.t) > end - span);
  const L = 8, R = w - 8, T = 20, B = h - 18;
  const x = (t) => L + (R - L) * (1 - (end - t) / span);
  const rate = (p, k) => (Number(p[k]) || 0) / step;
  const max = Math.max(1, ...pts.map((p) => Math.max(rate(p, 'calls'), rate(p, 'stored'), rate(p, 'errors'))));
  const y = (val) => B - (B - T) * (val / max);
  ctx.font = '11px system-ui, sans-serif';
  ctx.strokeStyle = v('--grid'); ctx.lineWidth = 1; ctx.fillStyle = v('--muted');
  for (const f of [0, 0.5, 1]) { ctx.beginPath(); ctx.moveTo(L, Math.round(y(max * f)) + 0.5); ctx.lineTo(R, Math.round(y(max * f)) + 0.5); ctx.stroke(); }
  const maxLabel = `${max >= 100 ? Math.round(max) : +max.toFixed(2)}/s`;
  ctx.textAlign = 'left'; ctx.fillText(maxLabel, L, T - 6);
  ctx.fillText(span >= 120 ? `−${Math.round(span / 60)} min` : `−${Math.round(span)} s`, L, h - 4);
  ctx.textAlign = 'right'; ctx.fillText('now', R, h - 4);
  if (!pts.length) { ctx.textAlign = 'center'; ctx.fillText('no data yet', w / 2, (T + B) / 2); return; }
  const bw = Math.max(1, ((R - L) * step) / span - 1);
  ctx.fillStyle = v('--c-errors');
  for (const p of pts) if (rate(p, 'errors') > 0) ctx.fillRect(x(p.t) - bw / 2, y(rate(p, 'errors')), bw, B - y(rate(p, 'errors')));
  for (const [k, c] of [['calls', '--c-calls'], ['stored', '--c-stored']]) {
    ctx.strokeStyle = v(c); ctx.lineWidth = 1.8; ctx.lineJoin = 'round'; ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(rate(p, k))) : ctx.moveTo(x(p.t), y(rate(p, k)))));
    ctx.stroke();
  }
}

// ---------- controls ----------
function setControls(on) {
  controls = on;
  $('sampling-fieldset').disabled = !on;
  $('limits-fieldset').disabled = !on;
  document.querySelectorAll('.ro-note').forEach((n) => { n.hidden = on; });
  document.querySelectorAll('#functions button, #type-limits button').forEach((b) => { b.disabled = !on; });
}

// Never overwrite a field the user is editing (focused) or has changed but not applied.
function fill(input, value) {
  if (input === document.activeElement || input.dataset.dirty) return;
  if (input.type === 'checkbox') input.checked = !!value; else input.value = value == null ? '' : String(value);
}
document.addEventListener('input', (e) => { if (e.target.matches('form input, form select')) e.target.dataset.dirty = '1'; });
const clean = (form) => form.querySelectorAll('[data-dirty]').forEach((i) => delete i.dataset.dirty);
const num = (id) => { const s = $(id).value.trim(); return s === '' ? null : Number(s); };

function showStatus(id, text, isErr) { const s = $(id); s.textContent = text; s.classList.toggle('err', !!isErr); }

function fillSampling(c) {
  fill($('sampling-strategy'), c.sampling_strategy);
  fill($('sampling-rate'), c.sampling_rate);
  fill($('sampling-rate-range'), c.sampling_rate);
  fill($('sampling-min-rate'), c.min_rate);
  fill($('sampling-max-rate'), c.max_rate);
  fill($('always-capture-errors'), c.always_capture_errors);
  fill($('always-capture-slow'), c.always_capture_slow);
  fill($('latency-threshold-ms'), c.latency_threshold_ms);
  adaptiveHint();
}
function adaptiveHint() {
  const adaptive = $('sampling-strategy').value === 'adaptive';
  document.querySelectorAll('label.adaptive').forEach((l) => { l.classList.toggle('dim', !adaptive); l.title = adaptive ? '' : 'used by the adaptive strategy'; });
}

function typeLimitRow(t) {
  const input = (name, value, ph) => el('input', { type: name === 'limit_per_type' ? 'number' : 'text', name, value: value == null ? '' : String(value), placeholder: ph, min: '0', step: '1' });
  const del = el('button', { type: 'button', class: 'secondary', title: 'remove this type limit' }, '×');
  const row = el('tr', {}, el('td', {}, input('function', t.function, 'any function')),
    el('td', {}, input('field_path', t.field_path, 'e.g. order.kind')), el('td', {}, input('limit_per_type', t.limit_per_type, '')), el('td', {}, del));
  del.addEventListener('click', () => { row.remove(); $('type-limits-edit').dataset.dirty = '1'; });
  return row;
}
function fillLimits(c) {
  fill($('limit-per-function'), c.limit_per_function);
  fill($('limit-action'), c.limit_action);
  fill($('overflow-sample-rate'), c.overflow_sample_rate);
  const edit = $('type-limits-edit');
  if (edit.dataset.dirty || edit.contains(document.activeElement) || edit.querySelector('[data-dirty]')) return;
  edit.replaceChildren(...(c.type_limits || []).map(typeLimitRow));
}

async function loadConfig() {
  const [s, l] = await Promise.allSettled([api('api/sampling'), api('api/limits')]);
  if (s.status === 'fulfilled' && s.value) fillSampling(s.value);
  if (l.status === 'fulfilled' && l.value) fillLimits(l.value);
}

async function submit(form, statusId, method, path, body) {
  showStatus(statusId, 'saving…');
  try {
    await api(path, method, body);
    if (form) { clean(form); delete $('type-limits-edit').dataset.dirty; }
    showStatus(statusId, statusId === 'reset-status' ? 'reset' : 'saved');
    await loadConfig();
  } catch (e) { showStatus(statusId, e.message, true); }
}
const reset = (body) => submit(null, 'reset-status', 'POST', 'api/limits/reset', body);

$('sampling-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!controls) return;
  submit($('sampling-form'), 'sampling-status', 'PUT', 'api/sampling', {
    sampling_strategy: $('sampling-strategy').value, sampling_rate: num('sampling-rate'),
    min_rate: num('sampling-min-rate'), max_rate: num('sampling-max-rate'),
    always_capture_errors: $('always-capture-errors').checked, always_capture_slow: $('always-capture-slow').checked,
    latency_threshold_ms: num('latency-threshold-ms'),
  });
});
$('limits-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!controls) return;
  const typeLimits = [...$('type-limits-edit').rows].map((r) => {
    const get = (n) => r.querySelector(`[name="${n}"]`).value.trim();
    return { function: get('function') || null, field_path: get('field_path'), limit_per_type: get('limit_per_type') === '' ? null : Number(get('limit_per_type')) };
  }).filter((t) => t.field_path || t.function || t.limit_per_type != null);
  submit($('limits-form'), 'limits-status', 'PUT', 'api/limits', {
    limit_per_function: num('limit-per-function'), limit_action: $('limit-action').value,
    overflow_sample_rate: num('overflow-sample-rate'), type_limits: typeLimits,
  });
});
$('type-limit-add').addEventListener('click', () => {
  $('type-limits-edit').append(typeLimitRow({}));
  $('type-limits-edit').dataset.dirty = '1';
});
$('limits-reset-all').addEventListener('click', () => reset({}));
$('sampling-rate').addEventListener('input', () => { $('sampling-rate-range').value = $('sampling-rate').value; });
$('sampling-rate-range').addEventListener('input', () => { $('sampling-rate').value = $('sampling-rate-range').value; $('sampling-rate').dataset.dirty = '1'; });
$('sampling-strategy').addEventListener('change', adaptiveHint);

// ---------- live stream ----------
function connState(open) {
  const c = $('conn-state');
  c.textContent = open ? 'live' : 'reconnecting…';
  c.classList.toggle('open', open);
}
function connect() {
  const es = new EventSource('api/events' + (TOKEN ? '?token=' + encodeURIComponent(TOKEN) : ''));
  es.onopen = () => connState(true);
  es.addEventListener('stats', (e) => {
    connState(true);
    try { render(JSON.parse(e.data)); } catch (err) { console.warn('bad stats event', err); }
  });
  es.onerror = () => {
    connState(false);
    // EventSource retries by itself unless the server refused the stream (then readyState is CLOSED).
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
  };
}

window.addEventListener('resize', drawChart);
api('api/stats').then((s) => { if (!lastStats) render(s); }).catch(() => {});
loadConfig();
connect();
