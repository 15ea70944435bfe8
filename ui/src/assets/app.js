// The capture browser's views, rendered from /api/v1. Everything shown is set as text:
// function names come from the profiled app and are never parsed as HTML.
'use strict';

const api = '/api/v1';

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === 'text') node.textContent = String(value);
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function seg(value) {
  return encodeURIComponent(value);
}

function capturePath(ns, name) {
  return `/captures/${seg(ns)}/${seg(name)}`;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: 'application/json' } });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) throw new Error((body && body.message) || `${response.status} ${response.statusText}`);
  return body;
}

function show(...nodes) {
  const main = document.getElementById('main');
  main.replaceChildren(...nodes);
}

function crumbs(...parts) {
  const nav = document.getElementById('crumbs');
  const items = [el('a', { href: '/', text: 'All captures' })];
  for (const [text, href] of parts) {
    items.push(' / ');
    items.push(href ? el('a', { href, text }) : el('span', { text }));
  }
  nav.replaceChildren(...items);
}

function level(value) {
  return value ? el('span', { class: `level-${value}`, text: value }) : el('span', { class: 'muted', text: '—' });
}

function number(value, digits) {
  if (value === undefined || value === null) return '—';
  if (typeof value === 'number' && digits !== undefined) return value.toFixed(digits);
  return String(value);
}

// A table whose columns sort when their header is clicked (numbers numerically).
function table(id, columns, rows) {
  const head = el('tr');
  const body = el('tbody');
  let sortKey = null;
  let descending = true;
  function render() {
    const sorted = rows.slice();
    if (sortKey !== null) {
      sorted.sort((a, b) => {
        const x = a.sort[sortKey];
        const y = b.sort[sortKey];
        const order = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
        return descending ? -order : order;
      });
    }
    body.replaceChildren(...sorted.map((row) => el('tr', {}, ...row.cells)));
  }
  columns.forEach((column, index) => {
    const th = el('th', { class: column.num ? 'num sortable' : 'sortable', text: column.title, scope: 'col' });
    th.addEventListener('click', () => {
      descending = sortKey === index ? !descending : true;
      sortKey = index;
      render();
    });
    head.append(th);
  });
  render();
  return el('table', { id }, el('thead', {}, head), body);
}

function cell(content, props) {
  return el('td', props || {}, content);
}

async function capturesView() {
  document.title = 'Captures — Biometrics';
  crumbs();
  const captures = await getJSON(`${api}/captures`);
  if (captures.length === 0) {
    show(el('h1', { text: 'Captures' }), el('p', { class: 'muted', text: 'No ProfileCapture in any namespace yet.' }));
    return;
  }
  const rows = captures.map((c) => ({
    sort: [c.namespace, c.name, c.phase || '', c.selectedPods || 0, c.lastRunTime || '', c.nextRunTime || '', c.thresholdLevel || ''],
    cells: [
      cell(c.namespace),
      cell(el('a', { href: capturePath(c.namespace, c.name), text: c.name })),
      cell(c.phase || '—'),
      cell(number(c.selectedPods), { class: 'num' }),
      cell(c.lastRunTime || '—'),
      cell(c.nextRunTime || '—'),
      cell(level(c.thresholdLevel)),
    ],
  }));
  const columns = ['Namespace', 'Name', 'Phase', 'Pods', 'Last run', 'Next run', 'Threshold'].map((title) => ({
    title,
    num: title === 'Pods',
  }));
  show(el('h1', { text: 'Captures' }), table('captures', columns, rows));
}

async function captureView(ns, name) {
  document.title = `${name} — Biometrics`;
  crumbs([`${ns}/${name}`, null]);
  const detail = await getJSON(`${api}/namespaces/${seg(ns)}/captures/${seg(name)}`);
  const nodes = [el('h1', { text: `${ns}/${name}` }), el('p', { class: 'muted', text: `Profiles: ${detail.capture.profiles.join(', ')}` })];
  nodes.push(...warnings(detail.warnings));
  if (detail.runs.length === 0) {
    nodes.push(el('p', { class: 'muted', text: 'No run yet.' }));
    show(...nodes);
    return;
  }
  const rows = detail.runs.map((r) => ({
    sort: [r.id, r.trigger || '', r.startTime || '', r.result || '', r.podsWithFiles.length],
    cells: [
      cell(el('a', { href: `${capturePath(ns, name)}/runs/${seg(r.id)}`, text: r.id })),
      cell(r.trigger || '—'),
      cell(r.startTime || '—'),
      cell(r.result || '—'),
      cell(number(r.podsWithFiles.length), { class: 'num' }),
    ],
  }));
  const columns = ['Run', 'Trigger', 'Started', 'Result', 'Pods with files'].map((title) => ({ title, num: title === 'Pods with files' }));
  nodes.push(el('h2', { text: 'Runs' }), table('runs', columns, rows));
  show(...nodes);
}

function warnings(list) {
  return (list || []).map((w) => el('p', { class: 'warning', text: w }));
}

function runtimeTable(pod) {
  const r = pod.runtime;
  if (!r) return el('p', { class: 'muted', text: 'No runtime metrics for this pod.' });
  const levels = r.levels || {};
  const rows = [
    ['Heap alloc (bytes)', number(r.heapAllocBytes), null],
    ['Goroutines', number(r.goroutines), levels.goroutines],
    ['GC per second', number(r.gcPerSecond, 2), levels.gcPerSecond],
    ['Memory %', number(r.memoryPercent, 1), levels.memoryPercent],
  ];
  return el(
    'table',
    { class: 'runtime' },
    el('thead', {}, el('tr', {}, el('th', { text: 'Metric' }), el('th', { class: 'num', text: 'Value' }), el('th', { text: 'Level' }))),
    el('tbody', {}, ...rows.map(([title, value, lvl]) => el('tr', {}, cell(title), cell(value, { class: 'num' }), cell(level(lvl))))),
  );
}

function topTable(id, top) {
  const rows = top.map((t) => ({
    sort: [t.flat, t.flatPercent, t.cum, t.cumPercent, t.function],
    cells: [
      cell(String(t.flat), { class: 'num' }),
      cell(`${t.flatPercent.toFixed(2)}%`, { class: 'num' }),
      cell(String(t.cum), { class: 'num' }),
      cell(`${t.cumPercent.toFixed(2)}%`, { class: 'num' }),
      cell(t.function, { class: 'fn' }),
    ],
  }));
  const columns = [
    { title: 'flat', num: true },
    { title: 'flat%', num: true },
    { title: 'cum', num: true },
    { title: 'cum%', num: true },
    { title: 'function' },
  ];
  return table(id, columns, rows);
}

async function runView(ns, name, run) {
  document.title = `${name} ${run} — Biometrics`;
  crumbs([`${ns}/${name}`, capturePath(ns, name)], [run, null]);
  const detail = await getJSON(`${api}/namespaces/${seg(ns)}/captures/${seg(name)}/runs/${seg(run)}`);
  const nodes = [el('h1', { text: `${ns}/${name} — run ${run}` })];
  const r = detail.run;
  nodes.push(el('p', { class: 'muted', text: `Trigger: ${r.trigger || '—'} · started ${r.startTime || '—'} · result ${r.result || '—'}` }));
  nodes.push(...warnings(detail.warnings));
  for (const pod of detail.pods) {
    const section = el('section', { class: 'pod', 'data-pod': pod.pod });
    section.append(el('h2', { text: `Pod ${pod.pod}` }));
    if (pod.error) section.append(el('p', { class: 'error', text: pod.error }));
    section.append(el('h3', { text: 'Runtime metrics' }), runtimeTable(pod));
    for (const file of pod.files) {
      const block = el('div', { class: 'profile', 'data-profile': file.profileType });
      block.append(el('h3', { text: `${file.profileType} (${file.bytes} bytes)` }));
      block.append(el('p', {}, el('a', { href: file.download, download: '', text: `Download ${file.file}` }), ` sha256 ${file.sha256}`));
      if (file.top && file.top.length) block.append(topTable(`top-${pod.pod}-${file.profileType}`, file.top));
      if (file.profileType !== 'trace') {
        const profileURL = encodeURIComponent(file.download);
        const title = encodeURIComponent(`${file.profileType} ${pod.pod} ${run}`);
        block.append(el('iframe', { class: 'flame', title: `flame graph ${file.profileType} ${pod.pod}`, src: `/speedscope/index.html#profileURL=${profileURL}&title=${title}` }));
      }
      section.append(block);
    }
    nodes.push(section);
  }
  show(...nodes);
}

async function route() {
  const parts = location.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  try {
    if (parts.length === 0) return await capturesView();
    if (parts[0] === 'captures' && parts.length === 3) return await captureView(parts[1], parts[2]);
    if (parts[0] === 'captures' && parts.length === 5 && parts[3] === 'runs') return await runView(parts[1], parts[2], parts[4]);
    show(el('h1', { text: 'Not found' }), el('p', { text: 'No such page.' }));
  } catch (error) {
    show(el('h1', { text: 'Error' }), el('p', { class: 'error', id: 'error', text: error.message }));
  }
}

document.addEventListener('DOMContentLoaded', route);
