// discluster's web view. It reads the cluster the way `discluster status --watch`
// does: the agent's event stream (GET /v1/events: a snapshot, then what changes),
// or GET /v1/status every few seconds from an agent without the stream; when its
// agent goes away it follows the stream of another member, from the addresses in
// the last status. The shard grid is built once and its cells are changed in place.
'use strict';

const TOKEN_KEY = 'discluster.token';
const MAX_EVENTS = 50;
// No byte of a stream for this long (its keep-alives come every 15 s): the agent is
// paused or cut off, try another.
const STREAM_SILENCE_MS = 20000;
// The page draws at most this often: a frame costs about the same whether one cell
// changed or a thousand, so a busy cluster's stream is drawn in batches.
const FRAME_GAP_MS = 100;
const $ = (id) => document.getElementById(id);

// The cell states: what each state of a shard is drawn as, in the legend's order.
const LEGEND = [
  ['ready', 'ready'], ['resuming', 'resuming'], ['identifying', 'identifying'],
  ['connecting', 'connecting / starting'], ['reconnecting', 'reconnecting'], ['stopped', 'stopped'],
  ['failed', 'failed'], ['suspended', 'suspended / unreachable'], ['unassigned', 'unassigned'], ['unknown', 'unknown'],
];
const LEGEND_OF = { starting: 'connecting', idle: 'connecting', unreachable: 'suspended' };

const view = {
  st: null, // the last status, less its shards and events (kept below)
  shards: [], // ShardStatus by shard id
  events: [], // typed events, oldest first
  cells: [], // the grid's cell elements by shard id
  groups: new Map(), // node ('' for unassigned) → {el, head, cells}
  moved: new Set(), // groups whose cells changed and must be put in order
  changed: new Set(), // shards whose cells must be drawn again
  downSince: [], // when each shard stopped being ready (ms), 0 while ready
  rates: new Map(), // member → events/s, from the seqs of two status reads
  counters: null, // {at, seq[], node[]} of the last status read
  countersAt: 0,
  source: { addr: null, node: '', how: 'connecting' },
  pinned: -1,
  hl: -1,
  dirty: false,
  membersDirty: true,
  eventsDirty: true,
};

// Figures the size test reads (time to first render, cost of each stream message).
const metrics = { firstRender: 0, snapshotAt: 0, buildMs: 0, snapshotMs: 0, shardMessages: 0, shardMs: 0, renders: 0, cspViolations: 0 };
window.discluster = { view, metrics };
document.addEventListener('securitypolicyviolation', (e) => {
  metrics.cspViolations++;
  console.error('blocked by the Content-Security-Policy: ' + e.violatedDirective + ' ' + e.blockedURI);
});

// ---------- talking to the agents ----------

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

// urlFor is path at the agent at addr (host:port), or at the page's own agent for ''.
function urlFor(addr, path) { return addr ? location.protocol + '//' + addr + path : path; }

function authHeaders() {
  const t = token();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

async function errorText(resp) {
  try {
    const b = await resp.json();
    if (b && b.error) return b.error;
  } catch (e) { /* not JSON */ }
  return 'HTTP ' + resp.status;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// stream follows addr's event stream until it ends. It answers how it ended:
// {live} when a snapshot came (the stream worked), {auth}, {nostream}, or {err}.
async function stream(addr) {
  const ctl = new AbortController();
  let silence;
  const pet = () => { clearTimeout(silence); silence = setTimeout(() => ctl.abort(), STREAM_SILENCE_MS); };
  pet();
  let resp;
  try {
    resp = await fetch(urlFor(addr, '/v1/events'), { headers: { ...authHeaders(), Accept: 'text/event-stream' }, signal: ctl.signal, cache: 'no-store' });
  } catch (e) {
    clearTimeout(silence);
    return { err: 'cannot reach ' + (addr || location.host) };
  }
  const type = resp.headers.get('Content-Type') || '';
  if (resp.status === 401) { clearTimeout(silence); return { auth: await errorText(resp) }; }
  if (resp.status === 404 || (resp.ok && !type.startsWith('text/event-stream'))) { clearTimeout(silence); return { nostream: true }; }
  if (!resp.ok) { clearTimeout(silence); return { err: (addr || location.host) + ': ' + await errorText(resp) }; }
  let live = false;
  try {
    await readEvents(resp.body, pet, (kind, data) => {
      onMessage(kind, data);
      if (kind === 'snapshot') {
        live = true;
        setSource(addr, 'live');
      }
    });
  } catch (e) { /* broken or aborted: the agent is gone or silent */ }
  clearTimeout(silence);
  return live ? { live: true } : { err: 'the stream of ' + (addr || location.host) + ' ended' };
}

// readEvents parses a server-sent event stream from body. A snapshot of 20,000
// shards is one line of megabytes: the search for its end goes on from where the
// last chunk stopped, never from its start again.
async function readEvents(body, onBytes, onEvent) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let from = 0;
  let kind = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n', from)) >= 0) {
      let line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      from = 0;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (data.length) onEvent(kind || 'message', data.join('\n'));
        kind = '';
        data = [];
      } else if (line.startsWith('event:')) {
        kind = line.slice(6).trim();
      } else if (line.startsWith('data:')) {
        data.push(line.slice(line[5] === ' ' ? 6 : 5));
      }
    }
    from = buf.length;
  }
}

// status reads addr's GET /v1/status: the status, or {auth} / {err}.
async function readStatus(addr) {
  let resp;
  try {
    resp = await fetch(urlFor(addr, '/v1/status'), { headers: authHeaders(), cache: 'no-store', signal: AbortSignal.timeout(15000) });
  } catch (e) {
    return { err: 'cannot reach ' + (addr || location.host) };
  }
  if (resp.status === 401) return { auth: await errorText(resp) };
  if (!resp.ok) return { err: (addr || location.host) + ': ' + await errorText(resp) };
  try {
    return { st: await resp.json() };
  } catch (e) {
    return { err: (addr || location.host) + ': ' + e.message };
  }
}

// poll reads addr's status every few seconds (an agent without the event stream)
// until it stops answering.
async function poll(addr) {
  for (;;) {
    const r = await readStatus(addr);
    if (!r.st) return r;
    applyStatus(r.st);
    setSource(addr, 'polling');
    await sleep(view.shards.length > 5000 ? 5000 : 2000);
  }
}

// candidates are the agents to follow, in order: the one followed now, the page's
// own, then the other members (the leader and live ones first), by the addresses
// in the last status, called the way this page was.
function candidates() {
  const out = [];
  const add = (a) => { if (a !== null && a !== undefined && !out.includes(a)) out.push(a); };
  add(view.source.addr);
  add('');
  const members = view.st ? [...view.st.members || []] : [];
  const rank = (m) => (m.leader ? 0 : m.gossip === 'alive' ? 1 : 2);
  members.sort((a, b) => rank(a) - rank(b));
  for (const m of members) if (m.http_addr && m.http_addr !== location.host) add(m.http_addr);
  return out;
}

async function follow() {
  let misses = 0;
  for (;;) {
    let worked = false;
    for (const addr of candidates()) {
      if (view.source.addr !== addr) setSource(addr, 'connecting');
      let r = await stream(addr);
      if (r.nostream) r = await poll(addr);
      if (r.auth) {
        await askToken('The agent at ' + (addr || location.host) + ' needs the API token: ' + r.auth);
        worked = true; // asked: try again from the top
        break;
      }
      if (r.live) { worked = true; break; }
      lastError(r.err);
    }
    if (worked) { misses = 0; continue; }
    setSource(view.source.addr, 'lost');
    await sleep(Math.min(5000, 500 * ++misses));
  }
}

// refresh reads the whole status now and then, for what the stream does not carry
// as it changes: seqs, heartbeats, last events, leases' ends, and the events/s they
// give. States come from the stream alone, so an older read never undoes a newer
// message.
async function refresh() {
  for (;;) {
    await sleep(view.shards.length > 5000 ? 15000 : 5000);
    if (view.source.how !== 'live') continue;
    const r = await readStatus(view.source.addr);
    if (r.st) mergeCounters(r.st);
  }
}

// ---------- the view's state ----------

function onMessage(kind, data) {
  const t0 = performance.now();
  let d;
  try { d = JSON.parse(data); } catch (e) { return; }
  switch (kind) {
    case 'snapshot':
      if (!metrics.snapshotAt) metrics.snapshotAt = t0;
      applyStatus(d);
      metrics.snapshotMs = performance.now() - t0;
      return;
    case 'overview': {
      const st = view.st || {};
      d.members = st.members || [];
      view.st = d;
      view.membersDirty = true;
      break;
    }
    case 'leader':
      if (!view.st) return;
      view.st.leader = d.leader;
      view.st.term = d.term;
      for (const m of view.st.members || []) m.leader = m.id === d.leader;
      view.membersDirty = true;
      break;
    case 'member': {
      if (!view.st) return;
      const ms = view.st.members || (view.st.members = []);
      const i = ms.findIndex((m) => m.id === d.id);
      if (i >= 0) ms[i] = d; else { ms.push(d); ms.sort((a, b) => a.id.localeCompare(b.id)); }
      view.membersDirty = true;
      break;
    }
    case 'member_gone':
      if (!view.st) return;
      view.st.members = (view.st.members || []).filter((m) => m.id !== d.id);
      view.membersDirty = true;
      break;
    case 'shard':
      setShard(d);
      metrics.shardMessages++;
      metrics.shardMs += performance.now() - t0;
      break;
    case 'event':
      view.events.push(d);
      if (view.events.length > MAX_EVENTS) view.events.splice(0, view.events.length - MAX_EVENTS);
      view.eventsDirty = true;
      break;
    default:
      return;
  }
  schedule();
}

// applyStatus takes a whole status: the first builds the grid, the next ones change
// the cells that differ.
function applyStatus(st) {
  const shards = st.shards || [];
  view.events = (st.events || []).slice(-MAX_EVENTS);
  delete st.shards;
  delete st.events;
  view.st = st;
  view.membersDirty = view.eventsDirty = true;
  const total = st.config ? st.config.total_shards : 0;
  if (view.cells.length !== total) {
    buildGrid(total, shards);
  } else {
    for (const s of shards) setShard(s);
  }
  takeCounters(shards);
  schedule();
}

function cellClass(s) {
  return 'c s-' + s.state + (s.phase === 'revoking' ? ' rv' : '');
}

function buildGrid(total, shards) {
  const t0 = performance.now();
  const grid = $('grid');
  grid.textContent = '';
  view.groups.clear();
  view.cells = new Array(total);
  view.shards = new Array(total);
  view.downSince = new Array(total).fill(0);
  document.documentElement.style.setProperty('--cell', total <= 256 ? '16px' : total <= 2048 ? '11px' : '7px');
  const frags = new Map();
  const now = Date.now();
  for (let id = 0; id < total; id++) {
    const s = shards[id] && shards[id].shard === id ? shards[id] : { shard: id, state: 'unknown' };
    const el = document.createElement('span');
    el.className = cellClass(s);
    el.sid = id;
    view.cells[id] = el;
    view.shards[id] = s;
    if (s.state !== 'ready') view.downSince[id] = now;
    const key = s.node || '';
    let f = frags.get(key);
    if (!f) frags.set(key, (f = document.createDocumentFragment()));
    f.appendChild(el);
  }
  for (const [key, f] of frags) group(key).cells.appendChild(f);
  orderGroups();
  metrics.buildMs = performance.now() - t0;
  if (!metrics.firstRender && total > 0) {
    // Painted: the frame after this one has begun.
    requestAnimationFrame(() => setTimeout(() => { metrics.firstRender = performance.now(); }, 0));
  }
}

// setShard changes one shard; its cell is drawn again at the next frame, in its new
// node's group when that changed.
function setShard(s) {
  const id = s.shard;
  const el = view.cells[id];
  if (!el) return;
  const old = view.shards[id] || {};
  view.shards[id] = s;
  view.changed.add(id);
  if (s.state !== old.state) {
    if (s.state === 'ready') view.downSince[id] = 0;
    else if (!view.downSince[id]) view.downSince[id] = Date.now();
  }
  if ((s.node || '') !== (old.node || '')) {
    view.moved.add(old.node || '');
    view.moved.add(s.node || '');
  }
  if (id === view.pinned) showTip(id, null);
}

function group(key) {
  let g = view.groups.get(key);
  if (g) return g;
  const el = document.createElement('div');
  el.className = 'group';
  el.dataset.node = key;
  const head = document.createElement('div');
  head.className = 'gh';
  const cells = document.createElement('div');
  cells.className = 'cells';
  el.append(head, cells);
  g = { el, head, cells, key };
  view.groups.set(key, g);
  $('grid').appendChild(el);
  return g;
}

// orderGroups puts the groups in the members' order, unassigned shards last, and
// drops the groups of nodes that are neither members nor hold a shard.
function orderGroups() {
  const ids = (view.st && view.st.members || []).map((m) => m.id);
  for (const id of ids) group(id);
  const keys = [...view.groups.keys()].sort((a, b) => (a === '') - (b === '') || a.localeCompare(b));
  const grid = $('grid');
  for (const k of keys) {
    const g = view.groups.get(k);
    if (!ids.includes(k) && g.cells.childElementCount === 0 && !view.moved.has(k)) {
      g.el.remove();
      view.groups.delete(k);
      continue;
    }
    grid.appendChild(g.el);
  }
}

// putInOrder puts the cells of the groups that gained or lost some back in shard
// order: the same elements, moved.
function putInOrder() {
  if (!view.moved.size) return;
  const lists = new Map();
  for (const k of view.moved) lists.set(k, []);
  for (let id = 0; id < view.shards.length; id++) {
    const l = lists.get(view.shards[id].node || '');
    if (l) l.push(view.cells[id]);
  }
  for (const [k, els] of lists) {
    const g = group(k);
    const f = document.createDocumentFragment();
    for (const el of els) f.appendChild(el);
    g.cells.appendChild(f);
  }
  view.moved.clear();
  orderGroups();
}

// takeCounters keeps a status's counters (not its states) and works out each
// member's events/s from the seqs since the last read.
function takeCounters(shards) {
  const now = Date.now();
  const prev = view.counters;
  const seq = new Array(view.shards.length);
  const node = new Array(view.shards.length);
  for (const s of shards) {
    seq[s.shard] = s.seq;
    node[s.shard] = s.node;
  }
  if (prev && now - prev.at > 500) {
    const sum = new Map();
    for (let id = 0; id < seq.length; id++) {
      if (node[id] && node[id] === prev.node[id] && seq[id] >= prev.seq[id]) {
        sum.set(node[id], (sum.get(node[id]) || 0) + seq[id] - prev.seq[id]);
      }
    }
    view.rates.clear();
    for (const [n, c] of sum) view.rates.set(n, c / ((now - prev.at) / 1000));
  }
  view.counters = { at: now, seq, node };
  view.countersAt = now;
  view.membersDirty = true;
}

function mergeCounters(st) {
  const shards = st.shards || [];
  for (const s of shards) {
    const cur = view.shards[s.shard];
    if (!cur) continue;
    if (cur.node === s.node) {
      cur.seq = s.seq;
      cur.checkpoint_seq = s.checkpoint_seq;
      cur.latency_ms = s.latency_ms;
      cur.last_event = s.last_event;
      cur.session = s.session;
      cur.cluster = s.cluster;
    }
  }
  if (view.st) {
    const byId = new Map((st.members || []).map((m) => [m.id, m]));
    for (const m of view.st.members || []) {
      const n = byId.get(m.id);
      if (n) { m.lease = n.lease; m.sink = n.sink; }
    }
    view.st.session_budget = st.session_budget;
  }
  takeCounters(shards);
  if (view.pinned >= 0) showTip(view.pinned, null);
  schedule();
}

// ---------- drawing ----------

let lastFrame = 0;

function schedule() {
  if (view.dirty) return;
  view.dirty = true;
  const wait = lastFrame + FRAME_GAP_MS - performance.now();
  if (wait > 0) setTimeout(() => requestAnimationFrame(render), wait);
  else requestAnimationFrame(render);
}

function render() {
  lastFrame = performance.now();
  view.dirty = false;
  metrics.renders++;
  for (const id of view.changed) {
    const cls = cellClass(view.shards[id]) + (id === view.hl ? ' hl' : '');
    if (view.cells[id].className !== cls) view.cells[id].className = cls;
  }
  view.changed.clear();
  putInOrder();
  renderSummary();
  if (view.membersDirty) { renderMembers(); view.membersDirty = false; }
  if (view.eventsDirty) { renderEvents(); view.eventsDirty = false; }
}

// setText changes an element's text only when it differs: a frame redraws the
// summary, and most of the time nothing in it changed.
function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtDur(ms) {
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  const m = Math.floor(ms / 60000);
  return m + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
}

function fmtTime(t) {
  const d = new Date(t);
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function renderSummary() {
  const st = view.st;
  const total = view.shards.length;
  const counts = new Map();
  const byNode = new Map();
  let identify = 0;
  let oldest = 0;
  const fenced = new Set((st && st.fences || []).map((f) => f.node));
  for (let id = 0; id < total; id++) {
    const s = view.shards[id];
    const leg = LEGEND_OF[s.state] || s.state;
    counts.set(leg, (counts.get(leg) || 0) + 1);
    const key = s.node || '';
    let c = byNode.get(key);
    if (!c) byNode.set(key, (c = { n: 0, ready: 0 }));
    c.n++;
    if (s.state === 'ready') c.ready++;
    else {
      if (!s.checkpoint_seq && !fenced.has(s.node)) identify++;
      if (view.downSince[id] && (!oldest || view.downSince[id] < oldest)) oldest = view.downSince[id];
    }
  }
  const ready = counts.get('ready') || 0;
  if (!st || !st.config) {
    setText($('ready'), '–');
    setText($('readyof'), st ? 'the cluster has no shard count yet' : 'waiting for the cluster\'s status');
  } else {
    setText($('ready'), ready + '/' + total);
    setText($('readyof'), 'shards READY');
  }
  const shown = LEGEND.map(([k]) => counts.get(k) || 0).join(',');
  if (shown !== view.legendShown) {
    view.legendShown = shown;
    drawLegend(counts, total);
  }
  const notes = [];
  if (st && st.config && identify > 0) {
    const mc = Math.max(1, st.config.max_concurrency);
    const win = st.config.identify_window_ns / 1e6;
    notes.push(identify + ' to identify: ~' + fmtDur(Math.ceil(identify / mc) * win) + ' by the identify schedule (' + mc + ' per ' + fmtDur(win) + ')');
  }
  if (ready < total && oldest) notes.push((total - ready) + ' not ready, the longest for ' + fmtDur(Date.now() - oldest));
  // A reshard: the grid stays the current generation's until the switch; the new
  // one's progress is the leader's count of its shards warm (READY with their guilds).
  const rs = st && st.reshard;
  if (rs) {
    notes.unshift('resharding ' + rs.from + ' → ' + rs.to + ' shards: ' + rs.warm + '/' + rs.to + ' warm, ' +
      rs.assigned + '/' + rs.to + ' assigned, ' + (rs.warm < rs.to ? 'switch in ~' + fmtDur(rs.eta_ns / 1e6) + ' by the identify schedule' : 'switching'));
  }
  setText($('progress'), notes.join(' · '));

  const b = st && st.session_budget;
  const budget = $('budget');
  budget.classList.toggle('low', !!(b && b.low));
  budget.textContent = !b ? '' : !b.known ? 'session start budget: not known yet' :
    'session starts left: ' + b.remaining + ' of ' + b.total + ' (reserve ' + b.reserve + ')' +
    (b.resets_at ? ', resets ' + fmtTime(b.resets_at) : '') + (b.note ? ' · ' + b.note : '');

  const fences = (st && st.fences || []).map((f) => f.shards + ' shards of ' + f.node + ' wait for its last lease to run out, until ' +
    fmtTime(f.until) + ' (' + fmtDur(Math.max(0, Date.parse(f.until) - Date.now())) + '): it may still be running them');
  setList($('fences'), fences);
  setList($('problems'), st && st.problems || []);

  setText($('leader'), st ? (st.leader ? 'leader ' + st.leader + ' · term ' + st.term : 'no leader') : '');

  for (const [key, g] of view.groups) {
    const c = byNode.get(key) || { n: 0, ready: 0 };
    const m = st && (st.members || []).find((x) => x.id === key);
    const count = c.n + ' shards' + (c.n && c.ready < c.n ? ', ' + c.ready + ' ready' : '');
    const why = (m && memberTrouble(m)) || '';
    if (g.shown === count + why) continue;
    g.shown = count + why;
    g.head.textContent = '';
    g.head.append(el('b', '', key || 'unassigned'), el('span', 'muted', count));
    if (why) g.head.append(el('span', 'bad', why));
  }
  document.title = (st && st.config ? ready + '/' + total + ' ready · ' : '') + 'discluster';
}

// setList makes ul's items lines, when they differ.
function setList(ul, lines) {
  const key = lines.join('\n');
  if (ul.shown === key) return;
  ul.shown = key;
  ul.textContent = '';
  for (const l of lines) ul.appendChild(el('li', '', l));
}

// drawLegend draws the bar of states and the legend with each state's count.
function drawLegend(counts, total) {
  const bar = $('bar');
  bar.textContent = '';
  const legend = $('legend');
  legend.textContent = '';
  for (const [k, label] of LEGEND) {
    const n = counts.get(k) || 0;
    if (n && total) {
      const seg = el('span', 's-' + k);
      seg.style.width = (100 * n / total) + '%';
      bar.appendChild(seg);
    }
    const item = el('span');
    item.append(el('i', 's-' + k), label + (n ? ' ' + n : ''));
    legend.appendChild(item);
  }
}

// memberTrouble is why a member cannot run shards, '' when it can.
function memberTrouble(m) {
  if (m.state === 'failed') return 'failed' + (m.gossip !== 'alive' ? ' (gossip: ' + m.gossip + ')' : '');
  if (m.state === 'left') return 'left';
  if (m.gossip && m.gossip !== 'alive') return 'gossip: ' + m.gossip;
  if (m.problem) return m.problem;
  if (!m.lease) return 'did not answer';
  if (!m.lease.held) return 'no lease' + (m.lease.reason ? ': ' + m.lease.reason : '');
  return '';
}

function renderMembers() {
  const tbody = $('members').tBodies[0];
  tbody.textContent = '';
  const ms = view.st && view.st.members || [];
  for (const m of ms) {
    const tr = el('tr');
    tr.dataset.node = m.id;
    const trouble = memberTrouble(m);
    if (m.leader) tr.classList.add('leader');
    if (trouble && m.state !== 'left') tr.classList.add('bad');
    tr.append(el('td', '', m.id), el('td', 'addr', m.http_addr || ''),
      el('td', '', (m.raft || '–') + (m.leader ? ' · leader' : '')),
      el('td', '', (m.state || 'joining') + (m.gossip && m.gossip !== 'alive' ? ' (gossip ' + m.gossip + ')' : '')));
    const lease = el('td', trouble ? 'why' : '');
    if (!trouble && m.lease && m.lease.held) lease.append(el('span', 'ok', 'held'));
    else lease.append(el('span', 'no', trouble || 'none'));
    tr.append(lease, el('td', 'num', String(m.weight)), el('td', '', m.state === 'draining' ? 'draining' : '–'),
      el('td', 'num', String(m.shards)));
    const rate = view.rates.get(m.id);
    tr.append(el('td', 'num', rate === undefined ? '–' : rate.toFixed(rate < 10 ? 1 : 0)));
    const sink = m.sink;
    tr.append(el('td', sink && sink.failing ? 'why' : '', !sink ? '–' : sink.failing ?
      'failing since ' + fmtTime(sink.since) + ', ' + sink.backlog + ' waiting: ' + sink.error : 'ok, ' + sink.backlog + ' waiting'));
    const act = el('td');
    if (m.state === 'draining') act.append(actionButton('undrain', m.id, 'Cancel drain'));
    else if (m.state === 'alive' || m.state === 'failed') act.append(actionButton('drain', m.id, 'Drain'));
    tr.append(act);
    tbody.appendChild(tr);
  }
  orderGroups();
}

function actionButton(act, node, label) {
  const b = el('button', '', label);
  b.type = 'button';
  b.dataset.act = act;
  b.dataset.node = node;
  return b;
}

const EVENT_CLASS = {
  node_failed: 'k-bad', failover: 'k-bad', token_rejected: 'k-bad', lease_lost: 'k-warn', revoking: 'k-warn',
  flag_overridden: 'k-warn', node_joined: 'k-good', node_back: 'k-good', resumed: 'k-good', leader_elected: 'k-lead',
};

function countShards(ranges) {
  let n = 0;
  for (const part of (ranges || '').split(',')) {
    if (!part) continue;
    const [a, b] = part.split('-').map(Number);
    n += b === undefined ? 1 : b - a + 1;
  }
  return n;
}

// eventText says an event in words, as `discluster status` does.
function eventText(e) {
  const d = e.duration_ns / 1e6;
  switch (e.kind) {
    case 'leader_elected': return 'became leader (term ' + e.term + ')';
    case 'node_joined': return 'node joined: ' + e.subject;
    case 'node_back': return 'node is back: ' + e.subject;
    case 'node_failed': return e.subject + ' failed: ' + e.cause + '; ' + countShards(e.shards) + ' shards revoked';
    case 'node_removed': return e.subject + ' removed: ' + e.cause;
    case 'revoking': return 'revoking ' + e.shards + ' (' + e.cause + ')';
    case 'failover': return 'failover: ' + e.subject + '\'s shards ' + e.shards + ' reassigned ' + fmtDur(d) + ' after it failed (' +
      (e.reason ? e.reason.replace('_', ' ') : e.cause) + ')';
    case 'handed_off': return 'handed off shards ' + e.shards;
    case 'resumed': return countShards(e.shards) === 1 ? 'shard ' + e.shards + ' resumed in ' + fmtDur(d) :
      'shards ' + e.shards + ' resumed in ' + fmtDur(d) + ' (median), ' + fmtDur(e.max_ns / 1e6) + ' at most';
    case 'lease_lost': return 'lease lost: ' + countShards(e.shards) + ' shards suspended (' + e.cause + ')';
    case 'flag_overridden': return e.cause;
    case 'token_rejected': return 'bot token rejected: ' + countShards(e.shards) + ' shards stopped (' + e.cause + ')';
  }
  return e.kind + ' ' + (e.cause || '');
}

function renderEvents() {
  const ol = $('events');
  ol.textContent = '';
  for (let i = view.events.length - 1; i >= 0; i--) {
    const e = view.events[i];
    const li = el('li', EVENT_CLASS[e.kind] || '');
    li.dataset.kind = e.kind;
    const t = el('time', '', fmtTime(e.at));
    t.dateTime = e.at;
    li.append(t, el('span', 'who', e.node), eventText(e));
    ol.appendChild(li);
  }
  if (!view.events.length) ol.appendChild(el('li', 'muted', 'nothing yet'));
}

function setSource(addr, how) {
  view.source = { addr, node: how === 'live' || how === 'polling' ? (view.st && view.st.node) || '' : view.source.node, how };
  const s = $('source');
  const where = addr || location.host;
  s.dataset.how = how;
  s.dataset.addr = where;
  s.textContent = how === 'lost' ? 'no agent answers; retrying' :
    how === 'connecting' ? 'connecting to ' + where + '…' :
    (how === 'live' ? 'live' : 'polling') + ' from ' + (view.st ? view.st.node + ' ' : '') + '(' + where + ')';
  const banner = $('banner');
  if (how === 'lost') {
    showBanner('No agent answers: the page keeps trying its own and the members it last saw.', true);
  } else if ((how === 'live' || how === 'polling') && addr && addr !== location.host) {
    showBanner('The agent that served this page (' + location.host + ') does not answer: following ' + (view.st ? view.st.node : '') + ' at ' + addr + '.', false);
  } else if (how === 'live' || how === 'polling') {
    banner.hidden = true;
  }
}

function lastError(msg) { if (msg) $('source').title = msg; }

function showBanner(text, bad) {
  const b = $('banner');
  b.textContent = text;
  b.classList.toggle('bad', bad);
  b.hidden = false;
}

// ---------- the shard's details ----------

function showTip(id, anchor) {
  const s = view.shards[id];
  if (!s) return;
  const tip = $('tip');
  tip.textContent = '';
  const line = (k, v, cls) => {
    const d = el('div', cls);
    d.append(el('span', 'k', k + ' '), String(v));
    tip.appendChild(d);
  };
  const h = el('div');
  h.append(el('b', '', 'shard ' + id), ' · ' + s.state + (s.phase === 'revoking' ? ' (moving)' : ''));
  tip.appendChild(h);
  line('node', (s.node || 'none') + ' · cluster ' + s.cluster);
  if (s.session) line('session', s.session.slice(0, 8) + '…');
  line('seq', s.seq + ' · checkpoint ' + s.checkpoint_seq);
  if (s.latency_ms) line('heartbeat', s.latency_ms.toFixed(1) + ' ms');
  if (s.last_event) line('last event', fmtDur(Math.max(0, Date.now() - Date.parse(s.last_event))) + ' ago');
  if (view.downSince[id]) line('not ready for', fmtDur(Date.now() - view.downSince[id]), 'bad');
  if (s.error) line('error', s.error, 'bad');
  if (view.countersAt) line('counters as of', fmtTime(view.countersAt));
  tip.hidden = false;
  if (anchor) {
    const r = anchor.getBoundingClientRect();
    const w = tip.offsetWidth;
    const hgt = tip.offsetHeight;
    let x = r.right + 8;
    if (x + w > innerWidth - 4) x = Math.max(4, r.left - w - 8);
    let y = r.top - 4;
    if (y + hgt > innerHeight - 4) y = Math.max(4, innerHeight - hgt - 4);
    tip.style.left = x + 'px';
    tip.style.top = y + 'px';
  }
}

function hideTip() {
  if (view.pinned >= 0) return;
  $('tip').hidden = true;
}

function highlight(id) {
  if (view.hl >= 0 && view.cells[view.hl]) view.cells[view.hl].classList.remove('hl');
  view.hl = id;
  if (id >= 0 && view.cells[id]) view.cells[id].classList.add('hl');
}

function pin(id) {
  view.pinned = id;
  highlight(id);
  const cell = view.cells[id];
  $('tip').classList.add('pinned');
  cell.scrollIntoView({ block: 'center', inline: 'nearest' });
  showTip(id, cell);
}

function unpin() {
  view.pinned = -1;
  highlight(-1);
  $('tip').classList.remove('pinned');
  $('tip').hidden = true;
}

// search finds a shard by id or by a guild id: (guild_id >> 22) % shards.
function search(q) {
  const found = $('found');
  q = q.trim();
  const total = view.shards.length;
  if (!q) { found.textContent = ''; unpin(); return; }
  if (!/^\d+$/.test(q) || !total) { found.textContent = 'a shard id or a guild id (digits)'; return; }
  let id;
  let what = '';
  if (q.length < 16 && Number(q) < total) {
    id = Number(q);
  } else {
    id = Number((BigInt(q) >> 22n) % BigInt(total));
    what = 'guild ' + q + ' → ';
  }
  const s = view.shards[id];
  found.textContent = what + 'shard ' + id + ' on ' + (s.node || 'no node') + ', ' + s.state;
  pin(id);
}

// ---------- drains ----------

async function askToken(why) {
  const dlg = $('tokendlg');
  $('tokenwhy').textContent = why;
  $('tokenin').value = '';
  dlg.showModal();
  await new Promise((r) => dlg.addEventListener('close', r, { once: true }));
  const t = $('tokenin').value.trim();
  if (dlg.returnValue === 'ok' && t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    $('signout').hidden = false;
  } else {
    showBanner('The agent needs the API token; reload the page to enter it.', true);
    await new Promise(() => {}); // nothing more to do without it
  }
}

let pendingAction = null;

function openAction(act, node) {
  const m = (view.st && view.st.members || []).find((x) => x.id === node);
  pendingAction = { act, node };
  $('acttitle').textContent = act === 'drain' ? 'Drain ' + node + '?' : 'Cancel the drain of ' + node + '?';
  $('acttext').textContent = act === 'drain' ?
    'Its ' + (m ? m.shards : '') + ' shards move to the other nodes, one handoff at a time, each resumed at its exact seq. ' +
    'The drain is replicated: the node takes no shards, across restarts, until it is cancelled.' :
    node + ' takes shards again; the balancer moves some back to it, one handoff at a time.';
  $('actok').textContent = act === 'drain' ? 'Drain' : 'Cancel drain';
  $('acttoken').value = '';
  $('acttoken').placeholder = token() ? 'the one this tab has' : 'none (an agent that takes writes without one)';
  $('acterr').textContent = '';
  $('actdlg').showModal();
}

async function runAction(ev) {
  ev.preventDefault();
  const a = pendingAction;
  if (!a) return;
  const typed = $('acttoken').value.trim();
  const t = typed || token();
  const headers = t ? { Authorization: 'Bearer ' + t } : {};
  let resp;
  try {
    resp = await fetch(urlFor(view.source.addr, '/v1/drain/' + encodeURIComponent(a.node)),
      { method: a.act === 'drain' ? 'POST' : 'DELETE', headers, signal: AbortSignal.timeout(20000) });
  } catch (e) {
    $('acterr').textContent = 'No answer from ' + (view.source.addr || location.host) + ': ' + e.message;
    return;
  }
  if (!resp.ok) {
    $('acterr').textContent = await errorText(resp);
    return;
  }
  if (typed) {
    sessionStorage.setItem(TOKEN_KEY, typed);
    $('signout').hidden = false;
  }
  const body = await resp.json().catch(() => ({}));
  $('actdlg').close();
  showBanner(a.act === 'drain' ? a.node + ' is ' + (body.state || 'draining') + ': ' + (body.shards || 0) + ' shards to move off.' :
    'The drain of ' + a.node + ' is cancelled.', false);
  pendingAction = null;
}

// ---------- wiring ----------

function init() {
  const grid = $('grid');
  grid.addEventListener('mouseover', (ev) => {
    const c = ev.target;
    if (c.sid !== undefined && view.pinned < 0) showTip(c.sid, c);
  });
  grid.addEventListener('mouseleave', hideTip);
  grid.addEventListener('click', (ev) => {
    const c = ev.target;
    if (c.sid === undefined) return;
    if (view.pinned === c.sid) unpin(); else pin(c.sid);
    ev.stopPropagation();
  });
  document.addEventListener('click', (ev) => { if (view.pinned >= 0 && !$('tip').contains(ev.target)) unpin(); });
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') unpin(); });
  $('search').addEventListener('submit', (ev) => { ev.preventDefault(); search($('q').value); });
  $('q').addEventListener('input', () => { if (!$('q').value) search(''); });
  $('members').addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-act]');
    if (b) openAction(b.dataset.act, b.dataset.node);
  });
  $('actok').addEventListener('click', runAction);
  $('signout').hidden = !token();
  $('signout').addEventListener('click', async () => {
    sessionStorage.removeItem(TOKEN_KEY);
    await fetch('logout', { method: 'POST' }).catch(() => {});
    location.reload();
  });
  // Ages and countdowns move on between messages.
  setInterval(() => {
    if (view.st) schedule();
    if (view.pinned >= 0) showTip(view.pinned, null);
  }, 1000);
  render();
  follow();
  refresh();
}

init();
