// The capture browser's views, rendered from /api/v1. Everything shown is set as text:
// function names come from the profiled app and are never parsed as HTML.
'use strict';

const api = '/api/v1';
// Lines a top table and a comparison show at most (go tool pprof's -nodecount).
const TOP_ROWS = 200;
const COMPARE_ROWS = 500;

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

// Token mode: the browser's API wants a bearer token. It is kept for this tab only
// (sessionStorage), entered in the sign-in form or handed over once in the address's
// fragment (#token=…), which is taken out of the address at once; links, frames and images
// cannot send it, so in this mode they get the files as blob: URLs fetched with it.
const TOKEN_KEY = 'biometrics-token';

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function adoptFragmentToken() {
  const given = new URLSearchParams(location.hash.slice(1)).get('token');
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given.trim());
    history.replaceState(null, '', location.pathname + location.search);
  }
}

class Unauthorized extends Error {}

function withToken(headers) {
  const t = token();
  return t ? { ...headers, Authorization: `Bearer ${t}` } : headers;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: withToken({ Accept: 'application/json' }) });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  const message = (body && body.message) || `${response.status} ${response.statusText}`;
  if (response.status === 401) throw new Unauthorized(message);
  if (!response.ok) throw new Error(message);
  return body;
}

// A file of the API as a blob: URL, fetched with the token.
async function blobURL(url) {
  const response = await fetch(url, { headers: withToken({}) });
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return URL.createObjectURL(await response.blob());
}

// A download link; in token mode the click fetches the file with the token first.
function downloadLink(url, text) {
  const link = el('a', { href: url, download: '', text });
  if (token()) {
    link.addEventListener('click', async (event) => {
      event.preventDefault();
      const save = el('a', { href: await blobURL(url), download: url.split('/').pop() });
      save.click();
    });
  }
  return link;
}

function signIn(message) {
  document.title = 'Sign in — Biometrics';
  crumbs();
  const input = el('input', { type: 'password', id: 'token', autocomplete: 'off', 'aria-label': 'bearer token' });
  const button = el('button', { type: 'button', id: 'token-submit', text: 'Use this token' });
  button.addEventListener('click', () => {
    if (!input.value.trim()) return;
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    route();
  });
  show(
    el('h1', { text: 'Sign in' }),
    el('p', { class: 'error', id: 'error', text: message }),
    el('p', { text: 'This capture browser wants a bearer token your cluster accepts (for example from kubectl create token). It is kept in this tab only.' }),
    el('p', {}, input, ' ', button),
  );
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
  nodes.push(...rolloutsTable(ns, name, detail.rollouts || []));
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
  if (detail.runs.length >= 2) {
    const [newer, older] = detail.runs;
    const href = `${capturePath(ns, name)}/compare?base=${seg(older.id)}&run=${seg(newer.id)}`;
    nodes.push(el('p', {}, el('a', { href, id: 'compare-last-two', text: `Compare ${older.id} → ${newer.id}` })));
  }
  show(...nodes);
}

// The rollouts of the capture's onRolloutOf workload: each verdict, and the comparison of
// its baseline and candidate runs (with their differential flame graph).
function rolloutsTable(ns, name, rollouts) {
  if (rollouts.length === 0) return [];
  const rows = rollouts.map((r) => {
    const verdict = r.verdict ? (r.severity ? `${r.verdict} (${r.severity})` : r.verdict) : r.stage;
    const compare = r.baselineRun && r.candidateRun
      ? el('a', { href: `${capturePath(ns, name)}/compare?base=${seg(r.baselineRun)}&run=${seg(r.candidateRun)}`, id: `rollout-compare-${r.revision}`, text: `${r.baselineRun} → ${r.candidateRun}` })
      : '—';
    return {
      sort: [r.revision, verdict, r.message || ''],
      cells: [cell(r.revision), cell(verdict), cell(r.message || '—'), cell(compare)],
    };
  });
  const columns = ['Revision', 'Verdict', 'What moved', 'Compare'].map((title) => ({ title, num: false }));
  return [el('h2', { text: 'Rollouts' }), table('rollouts', columns, rows)];
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
  let sum = 0;
  const rows = top.map((t) => ({
    sort: [t.flat, t.flatPercent, (sum += t.flatPercent), t.cum, t.cumPercent, t.function],
    cells: [
      cell(String(t.flat), { class: 'num' }),
      cell(`${t.flatPercent.toFixed(2)}%`, { class: 'num' }),
      cell(`${sum.toFixed(2)}%`, { class: 'num' }),
      cell(String(t.cum), { class: 'num' }),
      cell(`${t.cumPercent.toFixed(2)}%`, { class: 'num' }),
      cell(t.function, { class: 'fn' }),
    ],
  }));
  const columns = [
    { title: 'flat', num: true },
    { title: 'flat%', num: true },
    { title: 'sum%', num: true },
    { title: 'cum', num: true },
    { title: 'cum%', num: true },
    { title: 'function' },
  ];
  return table(id, columns, rows);
}

// The top functions computed from the profile file(s), in place of `holder`'s content
// once they arrive; the status's (at most five) stay shown if they cannot be computed.
async function computedTop(holder, id, url) {
  try {
    const view = await getJSON(url);
    const shown = view.functions.length === TOP_ROWS ? `; the first ${TOP_ROWS} lines` : '';
    const note = el('p', { class: 'muted', text: `Computed from ${view.pods.length} file(s) (${view.pods.join(', ')}): ${view.sampleType}, total ${view.total}${view.durationSeconds ? ` over ${view.durationSeconds.toFixed(2)} s` : ''}${shown}` });
    holder.replaceChildren(note, topTable(id, view.functions));
  } catch (error) {
    holder.append(el('p', { class: 'error', text: `Top functions: ${error.message}` }));
  }
}

async function runView(ns, name, run) {
  document.title = `${name} ${run} — Biometrics`;
  crumbs([`${ns}/${name}`, capturePath(ns, name)], [run, null]);
  const detail = await getJSON(`${api}/namespaces/${seg(ns)}/captures/${seg(name)}/runs/${seg(run)}`);
  const nodes = [el('h1', { text: `${ns}/${name} — run ${run}` })];
  const r = detail.run;
  nodes.push(el('p', { class: 'muted', text: `Trigger: ${r.trigger || '—'} · started ${r.startTime || '—'} · result ${r.result || '—'}` }));
  nodes.push(...warnings(detail.warnings));
  const apiRun = `${api}/namespaces/${seg(ns)}/captures/${seg(name)}/runs/${seg(run)}`;
  const pending = [];
  const types = [...new Set(detail.pods.flatMap((p) => p.files.map((f) => f.profileType)))].filter((t) => t !== 'trace').sort();
  if (types.length) {
    const merged = el('section', { class: 'merged', id: 'merged' });
    merged.append(el('h2', { text: `All ${detail.pods.length} pod(s) merged` }));
    merged.append(el('p', {}, el('a', { href: `${capturePath(ns, name)}/compare?run=${seg(run)}`, id: 'compare-run', text: 'Compare with the run before' })));
    for (const type of types) {
      const holder = el('div', { class: 'profile', 'data-profile': type });
      merged.append(el('h3', { text: type }), holder);
      pending.push(computedTop(holder, `merged-${type}`, `${apiRun}/top?profile=${seg(type)}&nodecount=${TOP_ROWS}`));
    }
    nodes.push(merged);
  }
  for (const pod of detail.pods) {
    const section = el('section', { class: 'pod', 'data-pod': pod.pod });
    section.append(el('h2', { text: `Pod ${pod.pod}` }));
    if (pod.error) section.append(el('p', { class: 'error', text: pod.error }));
    section.append(el('h3', { text: 'Runtime metrics' }), runtimeTable(pod));
    for (const file of pod.files) {
      const block = el('div', { class: 'profile', 'data-profile': file.profileType });
      block.append(el('h3', { text: `${file.profileType} (${file.bytes} bytes)` }));
      block.append(el('p', {}, downloadLink(file.download, `Download ${file.file}`), ` sha256 ${file.sha256}`));
      const holder = el('div', { class: 'top' });
      if (file.top && file.top.length) holder.append(topTable(`top-${pod.pod}-${file.profileType}`, file.top));
      block.append(holder);
      if (file.profileType !== 'trace') {
        pending.push(computedTop(holder, `top-${pod.pod}-${file.profileType}`, `${apiRun}/top?profile=${seg(file.profileType)}&pod=${seg(pod.pod)}&nodecount=${TOP_ROWS}`));
        const title = encodeURIComponent(`${file.profileType} ${pod.pod} ${run}`);
        const frame = el('iframe', { class: 'flame', title: `flame graph ${file.profileType} ${pod.pod}` });
        const frameFor = (profile) => `/speedscope/index.html#profileURL=${encodeURIComponent(profile)}&title=${title}`;
        if (token()) pending.push(blobURL(file.download).then((blob) => frame.setAttribute('src', frameFor(blob))));
        else frame.setAttribute('src', frameFor(file.download));
        block.append(frame);
      }
      section.append(block);
    }
    nodes.push(section);
  }
  show(...nodes);
  await Promise.all(pending);
}

function option(value, text, selected) {
  const node = el('option', { value, text });
  if (selected) node.selected = true;
  return node;
}

// A labelled picker whose change reloads the comparison with that parameter.
function picker(label, id, choices, selected, onChange) {
  const select = el('select', { id }, ...choices.map(([value, text]) => option(value, text, value === selected)));
  select.addEventListener('change', () => onChange(select.value));
  return el('label', {}, label, select);
}

function signed(value) {
  return value > 0 ? `+${value}` : String(value);
}

async function compareView(ns, name, params) {
  document.title = `${name} compare — Biometrics`;
  crumbs([`${ns}/${name}`, capturePath(ns, name)], ['compare', null]);
  const detail = await getJSON(`${api}/namespaces/${seg(ns)}/captures/${seg(name)}`);
  const query = new URLSearchParams();
  for (const key of ['profile', 'base', 'run', 'pod', 'basePod']) {
    if (params.get(key)) query.set(key, params.get(key));
  }
  const asked = new URLSearchParams(query);
  asked.set('nodecount', String(COMPARE_ROWS));
  const view = await getJSON(`${api}/namespaces/${seg(ns)}/captures/${seg(name)}/compare?${asked}`);
  const go = (key, value) => {
    const next = new URLSearchParams(query);
    next.set('base', view.base);
    next.set('run', view.run);
    if (value) next.set(key, value);
    else next.delete(key);
    location.assign(`${capturePath(ns, name)}/compare?${next}`);
  };
  const runs = detail.runs.filter((r) => r.podsWithFiles.length > 0).map((r) => [r.id, `${r.id} (${r.startTime || '—'})`]);
  const pods = [...new Set(detail.runs.flatMap((r) => r.podsWithFiles))].sort().map((p) => [p, p]);
  const profiles = detail.capture.profiles.filter((p) => p !== 'trace').map((p) => [p, p]);
  const nodes = [el('h1', { text: `${ns}/${name} — ${view.run}${view.pod ? ` (${view.pod})` : ''} against ${view.base}${view.basePod ? ` (${view.basePod})` : ''}` })];
  nodes.push(
    el(
      'div',
      { class: 'pickers' },
      picker('Profile', 'pick-profile', profiles, view.profile, (v) => go('profile', v)),
      picker('Base run', 'pick-base', runs, view.base, (v) => go('base', v)),
      picker('Base pod', 'pick-base-pod', [['', 'all pods merged'], ...pods], view.basePod || '', (v) => go('basePod', v)),
      picker('Run', 'pick-run', runs, view.run, (v) => go('run', v)),
      picker('Pod', 'pick-pod', [['', 'all pods merged'], ...pods], view.pod || '', (v) => go('pod', v)),
    ),
  );
  const seconds = (s) => (s ? ` over ${s.toFixed(2)} s` : '');
  nodes.push(el('p', { class: 'muted', text: `${view.sampleType}: base total ${view.baseTotal}${seconds(view.baseSeconds)}, run total ${view.total}${seconds(view.seconds)}; change total ${view.diffTotal} (as go tool pprof -top -base counts it)` }));
  const rows = view.rows.map((r) => {
    const trend = r.flatDelta > 0 || (r.flatDelta === 0 && r.cumDelta > 0) ? 'grew' : r.flatDelta < 0 || r.cumDelta < 0 ? 'shrank' : '';
    const perSecond = r.flatDeltaPerSecond === null || r.flatDeltaPerSecond === undefined ? '—' : signed(Math.round(r.flatDeltaPerSecond));
    return {
      sort: [r.flatDelta, r.flatDeltaPercent, r.cumDelta, r.cumDeltaPercent, r.flatDeltaPerSecond || 0, r.baseFlat, r.flat, r.baseCum, r.cum, r.function],
      cells: [
        cell(signed(r.flatDelta), { class: `num ${trend}` }),
        cell(`${r.flatDeltaPercent.toFixed(2)}%`, { class: 'num' }),
        cell(signed(r.cumDelta), { class: `num ${trend}` }),
        cell(`${r.cumDeltaPercent.toFixed(2)}%`, { class: 'num' }),
        cell(perSecond, { class: 'num' }),
        cell(String(r.baseFlat), { class: 'num' }),
        cell(String(r.flat), { class: 'num' }),
        cell(String(r.baseCum), { class: 'num' }),
        cell(String(r.cum), { class: 'num' }),
        cell(r.function, { class: `fn ${trend}`, 'data-trend': trend }),
      ],
    };
  });
  const columns = ['Δflat', 'Δflat%', 'Δcum', 'Δcum%', 'Δflat/s', 'base flat', 'flat', 'base cum', 'cum'].map((title) => ({ title, num: true }));
  columns.push({ title: 'function' });
  nodes.push(el('h2', { text: view.rows.length === COMPARE_ROWS ? `Functions (the first ${COMPARE_ROWS} changes)` : 'Functions' }), table('compare', columns, rows));
  const svgQuery = new URLSearchParams(query);
  svgQuery.set('base', view.base);
  svgQuery.set('run', view.run);
  nodes.push(
    el('h2', { text: 'Differential flame graph' }),
    el('p', { class: 'muted', text: 'Red: grew; blue: shrank. Widths are the compared side.' }),
  );
  const svg = `${api}/namespaces/${seg(ns)}/captures/${seg(name)}/compare/flamegraph.svg?${svgQuery}`;
  const image = el('img', { class: 'flame', id: 'diff-flame', alt: 'differential flame graph' });
  nodes.push(image);
  show(...nodes);
  image.setAttribute('src', token() ? await blobURL(svg) : svg);
}

async function route() {
  const parts = location.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  try {
    if (parts.length === 0) return await capturesView();
    if (parts[0] === 'captures' && parts.length === 3) return await captureView(parts[1], parts[2]);
    if (parts[0] === 'captures' && parts.length === 5 && parts[3] === 'runs') return await runView(parts[1], parts[2], parts[4]);
    if (parts[0] === 'captures' && parts.length === 4 && parts[3] === 'compare') return await compareView(parts[1], parts[2], new URLSearchParams(location.search));
    show(el('h1', { text: 'Not found' }), el('p', { text: 'No such page.' }));
  } catch (error) {
    if (error instanceof Unauthorized) return signIn(error.message);
    show(el('h1', { text: 'Error' }), el('p', { class: 'error', id: 'error', text: error.message }));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  adoptFragmentToken();
  route();
});
