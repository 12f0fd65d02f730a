// The web UI of broked connections: plain JavaScript, no framework, nothing from the internet.
//
// Served under a strict Content-Security-Policy (scripts and styles from this server only), so
// there is no inline script or style anywhere. Text from the API is only ever put into the page
// with textContent / createElement, never as HTML.

const MASK = '********';
const TOKEN_KEY = 'broked.apiToken'; // sessionStorage: this tab only
const TYPE_FIELDS = ['host', 'port', 'schema', 'login', 'password', 'extra'];
const FORM_FIELDS = ['conn_id', 'type', ...TYPE_FIELDS, 'region', 'ssh_tunnel', 'description'];

// Each type's field labels and extra example come from the type table
// (GET /api/connection-types: `labels`, `extra_example`), the one place they are written.

// Fields whose label does not depend on the type.
const FIXED_LABELS = {
  conn_id: 'Connection ID', type: 'Type', region: 'Region', ssh_tunnel: 'SSH bastion', description: 'Description',
};
const ID_RULE = /^[a-z0-9][a-z0-9_-]{0,127}$/; // SPEC §2, checked here too so all errors show at once
const ID_TEXT = 'use lowercase letters, digits, _ and -, starting with a letter or digit (at most 128 characters).';
const PORT_TEXT = 'use a whole number from 1 to 65535.';

const $ = (id) => document.getElementById(id);

const state = {
  types: [],          // GET /api/connection-types
  typeMap: new Map(),
  editing: null,      // the masked connection being edited, or null for a new one
  baseline: null,     // snapshot() of the form as loaded or saved; null while no form is shown
  tested: null,       // testSnapshot() of the form the shown test result is about
  shownHash: null,    // the hash of the page on screen
  allowLeave: false,  // the next hash change may leave a changed form (after Save, Delete, Discard)
  portTouched: false, // the user typed a port: do not replace it with a type's default
  busy: false,
  notice: '',         // shown after the next route change
  scopes: null,       // what the token may do (GET /api/whoami); null: not known yet, all shown
  bastions: [],       // conn_ids of the SFTP connections a connection may go through (ssh_tunnel)
  etag: null,         // the ETag of the connection as the form read it: the If-Match of its writes
};

// What the token may do: `admin` implies every scope. Unknown yet: everything is shown, and the
// server still refuses what the token may not do.
function can(scope) {
  return state.scopes === null || state.scopes.includes(scope) || state.scopes.includes('admin');
}

async function loadGrant() {
  try {
    const me = await api('GET', '/api/whoami');
    state.scopes = Array.isArray(me.scopes) ? me.scopes : null;
  } catch {
    state.scopes = null;
  }
  applyGrant();
}

// Hides the controls of what the token may not do (Save and Delete need write, Test needs test).
function applyGrant() {
  $('new-connection').hidden = !can('write');
  $('save').hidden = !can('write');
  $('test').hidden = !can('test');
  $('test-all').hidden = !can('test');
  if (!can('write')) $('form-delete').hidden = true;
  for (const b of document.querySelectorAll('#conn-rows button.delete')) b.hidden = !can('write');
  for (const a of document.querySelectorAll('#conn-rows a.button')) {
    a.textContent = can('write') ? 'Edit' : 'View';
    a.setAttribute('aria-label', `${a.textContent} ${a.closest('tr').dataset.connId}`);
  }
}

// ---------------------------------------------------------------------------------------------
// API

class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `The server answered ${status}.`);
    this.status = status;
    this.code = err.code || '';
    this.fields = Array.isArray(err.fields) ? err.fields : [];
    this.pipelines = Array.isArray(err.pipelines) ? err.pipelines : null;
  }
}

const enc = encodeURIComponent;

// `opts.ifMatch` sends If-Match (the ETag a read returned: the write happens only on that
// version, else 412); `opts.meta` receives the answer's ETag (`meta.etag`, a same-origin
// response header the page can read).
async function api(method, path, body, signal, opts = {}) {
  for (;;) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (opts.ifMatch) headers['If-Match'] = opts.ifMatch;
    const init = { method, headers, cache: 'no-store', credentials: 'same-origin' };
    if (signal) init.signal = signal;
    if (body !== undefined) {
      // A PATCH is a JSON merge patch (RFC 7386): an extra object is merged into the stored one.
      headers['Content-Type'] = method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch {
      throw new ApiError(0, { error: { code: 'network', message: 'Cannot reach the server.' } });
    }
    if (resp.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      if (await askToken(Boolean(token))) continue;
      throw new ApiError(401, { error: { code: 'unauthorized', message: 'This server needs an API token.' } });
    }
    if (opts.meta) opts.meta.etag = resp.headers.get('ETag');
    if (resp.status === 204) return null;
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }
}

// One prompt at a time: requests that get 401 together wait for the same answer.
let tokenPrompt = null;
function askToken(refused) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = $('token-dialog');
  const form = $('token-form');
  const input = $('token-input');
  $('token-error').hidden = !refused;
  input.value = '';
  const opener = document.activeElement;
  tokenPrompt = new Promise((resolve) => {
    const finish = (ok) => {
      form.removeEventListener('submit', onSubmit);
      $('token-cancel').removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      tokenPrompt = null;
      restoreFocus(opener);
      resolve(ok);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const value = input.value.trim();
      if (!value) {
        input.focus();
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, value);
      finish(true);
      // Another token may do other things.
      setTimeout(loadGrant, 0);
    };
    const onCancel = (e) => {
      e.preventDefault();
      finish(false);
    };
    form.addEventListener('submit', onSubmit);
    $('token-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    input.focus();
  });
  return tokenPrompt;
}

// ---------------------------------------------------------------------------------------------
// Small DOM helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function restoreFocus(node) {
  if (node && node.isConnected && typeof node.focus === 'function') node.focus();
}

// The banner: a message, and for a form that was refused an error summary — one line per
// problem, each a link to its field.
function showBanner(message, problems = []) {
  $('banner-text').textContent = message;
  const list = $('banner-list');
  list.replaceChildren(...problems.map((p) => el('li', {}, p.placed
    ? el('a', {
      href: `#${input(p.field).id}`,
      text: p.text,
      onclick: (e) => {
        e.preventDefault(); // the hash is the router's
        input(p.field).focus();
      },
    })
    : p.text)));
  list.hidden = problems.length === 0;
  $('banner').hidden = false;
}

function hideBanner() {
  $('banner').hidden = true;
  $('banner-text').textContent = '';
  $('banner-list').replaceChildren();
  $('banner-list').hidden = true;
}

function setNotice(message) {
  $('notice').textContent = message;
}

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || '';
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

function typeLabel(type) {
  const t = state.typeMap.get(type);
  return t ? t.label : type;
}

// ---------------------------------------------------------------------------------------------
// Routing: #/connections, #/new (the form), #/connections/ID — every ID, `new` too (issue 18).
// The form used to be #/connections/new: that link opens the connection named `new` when there
// is one, and the form otherwise (openForm).

const NEW_HASH = '#/new';
const OLD_NEW_HASH = '#/connections/new';

function parseRoute() {
  const hash = location.hash || '#/connections';
  if (hash === NEW_HASH) return { view: 'new' };
  const m = /^#\/connections\/(.+)$/.exec(hash);
  if (m) return { view: 'edit', id: decodeURIComponent(m[1]), old: hash === OLD_NEW_HASH };
  return { view: 'list' };
}

async function route(moveFocus) {
  const r = parseRoute();
  state.shownHash = location.hash;
  state.allowLeave = false;
  state.baseline = null;
  hideBanner();
  // A notice (Saved …, Deleted …) shows at the top, beside the heading that gets the focus.
  const notice = state.notice;
  state.notice = '';
  setNotice(notice);
  $('view-list').hidden = r.view !== 'list';
  $('view-form').hidden = r.view === 'list';
  let heading;
  if (r.view === 'list') {
    document.title = 'Connections · broked';
    heading = $('list-title');
    await loadList();
  } else {
    heading = $('form-title');
    await openForm(r.view === 'edit' ? r.id : null, r.old);
  }
  if (moveFocus) heading.focus();
}

// Goes to a hash that leaves the form without asking (its changes are saved or discarded).
function leaveTo(hash) {
  if (location.hash === hash) {
    route(true);
    return;
  }
  state.allowLeave = true;
  location.hash = hash;
}

function onHashChange() {
  if (location.hash === state.shownHash && !state.allowLeave) return; // put back by pushState
  if (!state.allowLeave && formChanged()) {
    // Back, forward or a typed address: stay on the form until the person decides.
    const target = location.hash;
    history.pushState(null, '', state.shownHash || '#/connections');
    askLeave(target, document.activeElement);
    return;
  }
  route(true);
}

// A link to another page while the form has changes asks first (before the hash changes).
function onLinkClick(e) {
  const a = e.target instanceof Element ? e.target.closest('a[href^="#/"]') : null;
  if (!a || e.defaultPrevented || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
  if (!formChanged()) return;
  const target = a.getAttribute('href');
  if (target === location.hash) return;
  e.preventDefault();
  askLeave(target, a);
}

let leaveTarget = null;
let leaveOpener = null;

function askLeave(target, opener) {
  leaveTarget = target;
  leaveOpener = opener;
  const c = state.editing;
  $('leave-body').textContent = c
    ? `Your changes to ${c.conn_id} are not saved. Discard them, or keep editing and Save.`
    : 'This new connection is not saved. Discard it, or keep editing and Save.';
  const dialog = $('leave-dialog');
  if (!dialog.open) dialog.showModal();
  $('leave-stay').focus();
}

function closeLeave(discard) {
  const dialog = $('leave-dialog');
  if (dialog.open) dialog.close();
  const target = leaveTarget;
  const opener = leaveOpener;
  leaveTarget = null;
  leaveOpener = null;
  if (discard && target !== null) {
    leaveTo(target);
  } else {
    restoreFocus(opener);
  }
}

// ---------------------------------------------------------------------------------------------
// The list: one page at a time from the server (GET /api/connections?limit=&cursor=), filtered
// there by type, last test result and a search text — 100,000 connections never reach the page
// at once.

const PAGE_SIZE = 100;

const listState = {
  cursors: [null], // the cursor of each page seen so far (page 1 has none)
  page: 0,         // index into cursors
  next: null,      // next_cursor of the page shown
  seq: 0,          // answers to an older request are dropped
  total: null,
  exact: true,
};

function listParams(cursor, limit) {
  const params = new URLSearchParams();
  const type = $('type-filter').value;
  const status = $('status-filter').value;
  const q = $('search').value.trim();
  if (type) params.set('type', type);
  if (status) params.set('status', status);
  if (q) params.set('q', q);
  params.set('limit', String(limit));
  if (cursor) params.set('cursor', cursor);
  return params;
}

// Loads the first page of the list (or, with keepPage, the page shown again).
async function loadList(keepPage = false) {
  if (keepPage !== true) {
    listState.cursors = [null];
    listState.page = 0;
  }
  const type = $('type-filter').value;
  const filtered = Boolean($('status-filter').value || $('search').value.trim());
  const status = $('list-status');
  const rows = $('conn-rows');
  status.textContent = 'Loading…';
  const seq = ++listState.seq;
  let page;
  try {
    page = await api('GET', `/api/connections?${listParams(listState.cursors[listState.page], PAGE_SIZE)}`);
  } catch (e) {
    if (seq !== listState.seq) return;
    status.textContent = '';
    showBanner(`Could not load the connections: ${e.message}`);
    return;
  }
  if (seq !== listState.seq) return; // a newer request (another filter) is on its way
  if (listState.page === 0) {
    listState.total = page.total;
    listState.exact = page.total_exact !== false;
  }
  listState.next = page.next_cursor || null;
  const list = page.items || [];
  rows.replaceChildren();
  for (const c of list) rows.append(row(c));
  applyGrant();
  $('conn-table').hidden = list.length === 0;
  const what = type ? `${typeLabel(type)} connection` : 'connection';
  const onePage = listState.page === 0 && !listState.next;
  const first = listState.page * PAGE_SIZE + 1;
  const last = first + list.length - 1;
  let text;
  if (list.length === 0) {
    if (filtered) text = `No ${what}s match.`;
    else text = type ? `No ${what}s.` : 'No connections yet. Create one with New Connection.';
  } else if (onePage) {
    text = `${list.length} ${what}${list.length === 1 ? '' : 's'}${filtered ? ' match' : ''}.`;
  } else {
    const total = listState.total == null ? ''
      : ` of ${listState.exact ? '' : 'more than '}${listState.total.toLocaleString()}`;
    text = `Showing ${first.toLocaleString()}–${last.toLocaleString()}${total} ${what}s.`;
  }
  status.textContent = text;
  $('pager').hidden = onePage || list.length === 0 && listState.page === 0;
  $('page-prev').disabled = listState.page === 0;
  $('page-next').disabled = !listState.next;
  $('page-text').textContent = `Page ${listState.page + 1}`;
}

function nextPage() {
  if (!listState.next) return;
  listState.cursors[listState.page + 1] = listState.next;
  listState.page += 1;
  loadList(true);
}

function prevPage() {
  if (listState.page === 0) return;
  listState.page -= 1;
  loadList(true);
}

let searchTimer = 0;
function onSearchInput() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(loadList, 250);
}

// The last test of a connection: OK, Failed or Not tested; when and what it said on hover (and
// for screen readers, in the cell's label).
function statusBadge(c) {
  if (!c.last_tested_at) {
    return el('span', { class: 'status untested', text: 'Not tested' });
  }
  const when = formatTime(c.last_tested_at);
  const ok = c.last_test_ok === true;
  const message = c.last_test_message || '';
  return el('span', {
    class: `status ${ok ? 'ok' : 'failed'}`,
    title: `${ok ? 'OK' : 'Failed'}, ${when}: ${message}`,
    'aria-label': `${ok ? 'OK' : 'Failed'}, tested ${when}: ${message}`,
    text: ok ? 'OK' : 'Failed',
  });
}

// A connection's password rotation (issue 20, docs/rotation.md): when it was last rotated and
// when the next scheduled rotation is due; a failing rotation (the last attempt failed, or
// extra.rotate_every is invalid) as a red badge that says why on hover (and in its label). A
// connection never rotated and without a schedule shows a dash.
function rotationCell(c) {
  if (!c.last_rotated_at && !c.next_due_at && !c.rotation_failing) {
    return el('span', { class: 'muted', text: '—' });
  }
  const time = (iso) => el('time', { datetime: iso, text: formatTime(iso) });
  const box = el('div', { class: 'rotation-cell' });
  if (c.rotation_failing) {
    const message = c.rotation_error || '';
    box.append(el('span', {
      class: 'status failed',
      title: `Rotation failing: ${message}`,
      'aria-label': `Rotation failing: ${message}`,
      text: 'Rotation failing',
    }));
  }
  box.append(el('span', { class: 'rotated' }, 'Rotated ',
    c.last_rotated_at ? time(c.last_rotated_at) : 'never'));
  if (c.next_due_at) box.append(el('span', { class: 'due' }, 'Due ', time(c.next_due_at)));
  return box;
}

function row(c) {
  const tr = el('tr', { 'data-conn-id': c.conn_id });
  tr.append(
    el('td', { 'data-label': 'Connection ID', class: 'conn-id' },
      el('a', { class: 'conn-link', href: `#/connections/${enc(c.conn_id)}` }, el('strong', { text: c.conn_id }))),
    el('td', { 'data-label': 'Type', text: typeLabel(c.type) }),
    el('td', { 'data-label': 'Host', class: 'host', text: c.host ?? '—' }),
    el('td', { 'data-label': 'Port', text: c.port == null ? '—' : String(c.port) }),
    el('td', { 'data-label': 'Last test', class: 'last-test' }, statusBadge(c)),
    el('td', { 'data-label': 'Rotation', class: 'rotation' }, rotationCell(c)),
    el('td', { 'data-label': 'Updated' }, el('time', { datetime: c.updated_at, text: formatTime(c.updated_at) })),
    el('td', { class: 'row-actions' },
      el('a', {
        class: 'button small',
        href: `#/connections/${enc(c.conn_id)}`,
        'aria-label': `Edit ${c.conn_id}`,
        text: 'Edit',
      }),
      el('button', {
        type: 'button',
        class: 'small danger delete',
        'aria-label': `Delete ${c.conn_id}`,
        text: 'Delete',
        onclick: (e) => openDelete(c.conn_id, e.currentTarget, etagOf(c)),
      })),
  );
  return tr;
}

// ---------------------------------------------------------------------------------------------
// Test all: every connection the filters match, a few at a time (POST …/{id}/test stores each
// result with its connection), the rows on screen filled in as results come; Cancel stops it.

const TEST_CONCURRENCY = 4;
let testAll = null; // { cancelled, controllers } while running

function setRowStatus(id, c) {
  const cell = document.querySelector(`#conn-rows tr[data-conn-id="${CSS.escape(id)}"] td.last-test`);
  if (cell) cell.replaceChildren(c ? statusBadge(c) : el('span', { class: 'status running', text: 'Testing…' }));
}

// The conn_ids to test, a page at a time (the same filters as the list).
async function* idsToTest() {
  let cursor = null;
  for (;;) {
    const page = await api('GET', `/api/connections?${listParams(cursor, 1000)}`);
    for (const c of page.items || []) yield c.conn_id;
    if (!page.next_cursor) return;
    cursor = page.next_cursor;
  }
}

async function runTestAll() {
  if (testAll) return;
  const run = { cancelled: false, controllers: new Set() };
  testAll = run;
  const panel = $('test-all-panel');
  const bar = $('test-all-progress');
  const text = $('test-all-text');
  panel.hidden = false;
  $('test-all').disabled = true;
  $('test-all-cancel').disabled = false;
  $('test-all-label').textContent = 'Testing connections…';
  let total = listState.page === 0 && listState.exact && listState.total != null ? listState.total : null;
  let done = 0;
  let failed = 0;
  const show = () => {
    bar.max = Math.max(total ?? done + 1, 1);
    bar.value = done;
    text.textContent = `${done}${total == null ? '' : ` of ${total}`} tested, ${failed} failed.`;
  };
  show();
  const ids = idsToTest();
  let exhausted = false;
  const nextId = async () => {
    if (exhausted || run.cancelled) return null;
    const { value, done: end } = await ids.next();
    if (end) {
      exhausted = true;
      return null;
    }
    return value;
  };
  const worker = async () => {
    for (;;) {
      const id = await nextId();
      if (id === null) return;
      setRowStatus(id, null);
      const controller = new AbortController();
      run.controllers.add(controller);
      try {
        const r = await api('POST', `/api/connections/${enc(id)}/test`, undefined, controller.signal);
        if (!r.success) failed += 1;
        setRowStatus(id, {
          last_tested_at: new Date().toISOString(), last_test_ok: r.success, last_test_message: r.message,
        });
      } catch (e) {
        if (run.cancelled) {
          setRowStatus(id, { last_tested_at: null });
          return;
        }
        failed += 1;
        setRowStatus(id, { last_tested_at: new Date().toISOString(), last_test_ok: false, last_test_message: e.message });
      } finally {
        run.controllers.delete(controller);
      }
      done += 1;
      show();
    }
  };
  let error = null;
  try {
    await Promise.all(Array.from({ length: TEST_CONCURRENCY }, worker));
  } catch (e) {
    error = e;
  }
  testAll = null;
  $('test-all').disabled = false;
  $('test-all-cancel').disabled = true;
  if (error) {
    $('test-all-label').textContent = 'Test all stopped';
    text.textContent = `${done} tested, ${failed} failed. Could not list the connections: ${error.message}`;
  } else if (run.cancelled) {
    $('test-all-label').textContent = 'Test all cancelled';
    text.textContent = `Cancelled: ${done} tested, ${failed} failed.`;
    if (parseRoute().view === 'list') loadList(true); // what the server kept
  } else {
    total = done;
    show();
    $('test-all-label').textContent = 'Test all finished';
    text.textContent = `Done: ${done} tested, ${failed} failed.`;
  }
}

function cancelTestAll() {
  if (!testAll) return;
  testAll.cancelled = true;
  for (const c of testAll.controllers) c.abort();
}

// ---------------------------------------------------------------------------------------------
// The form

function input(field) {
  return $(`f-${field}`);
}

function fieldBox(field) {
  return document.querySelector(`.field[data-field="${field}"]`);
}

function currentType() {
  return state.typeMap.get(input('type').value) || state.types[0];
}

async function openForm(id, oldNewLink = false) {
  clearErrors();
  $('test-result').replaceChildren();
  $('test-result').className = 'test-result';
  state.tested = null;
  $('form-status').textContent = '';
  const form = $('conn-form');
  form.reset();
  state.editing = null;
  state.etag = null;
  if (id !== null) {
    try {
      const meta = {};
      state.editing = await api('GET', `/api/connections/${enc(id)}`, undefined, undefined, meta);
      state.etag = etagOf(state.editing, meta);
    } catch (e) {
      if (e.status === 404 && oldNewLink) {
        // An old link to the form, and no connection named `new`: the form (the address stays,
        // so a connection named `new` saved from it opens there).
        return openForm(null);
      }
      showBanner(e.status === 404 ? `There is no connection "${id}".` : `Could not load "${id}": ${e.message}`);
      $('view-form').hidden = true;
      return;
    }
  }
  state.bastions = await loadBastions();
  fillForm(state.editing);
  showConnState(state.editing);
  showRotation(state.editing);
  showHistory(state.editing);
}

// The connection page below the form: its last test, and the pipelines that use it — the
// reason Delete is refused while there are any.
async function showConnState(c) {
  const box = $('conn-state');
  box.hidden = c === null;
  if (c === null) return;
  const last = $('last-test');
  if (c.last_tested_at) {
    last.replaceChildren(
      el('strong', { text: 'Last test: ' }),
      statusBadge(c),
      ` ${formatTime(c.last_tested_at)} — ${c.last_test_message || ''}`,
    );
  } else {
    last.replaceChildren(el('strong', { text: 'Last test: ' }), 'not tested since it was last saved.');
  }
  const used = $('used-by');
  used.replaceChildren(el('p', { text: 'Looking for pipelines that use it…' }));
  let pipelines;
  try {
    pipelines = (await api('GET', `/api/connections/${enc(c.conn_id)}/used-by`)).pipelines || [];
  } catch (e) {
    used.replaceChildren(el('p', { class: 'error', text: `Could not check which pipelines use it: ${e.message}` }));
    return;
  }
  if (state.editing !== c) return; // another page meanwhile
  const n = pipelines.length;
  if (n === 0) {
    used.replaceChildren(el('p', { text: `No pipeline uses ${c.conn_id}.` }));
    return;
  }
  used.replaceChildren(
    el('p', { text: `${c.conn_id} is used by ${n} pipeline${n === 1 ? '' : 's'}:` }),
    el('ul', { class: 'pipelines' }, ...pipelines.map((p) => el('li', {},
      el('strong', { text: p.name || p.pipeline_id }),
      ` (${p.pipeline_id})`,
      p.nodes && p.nodes.length ? ` — node${p.nodes.length === 1 ? '' : 's'} ${p.nodes.join(', ')}` : ''))),
    el('p', {
      class: 'explain',
      id: 'delete-refused',
      text: `Delete is refused while pipelines use ${c.conn_id} (the server answers 409 in use): `
        + 'they would fail when they next run. Remove it from these pipelines first, or delete it '
        + 'anyway from the Delete dialog.',
    }),
  );
}

// The SFTP connections that can be an SSH bastion (docs/tunnels.md); none if they cannot be read.
async function loadBastions() {
  try {
    const list = await api('GET', '/api/connections?type=sftp');
    return Array.isArray(list) ? list.map((c) => c.conn_id) : [];
  } catch {
    return [];
  }
}

// The bastion select: "None", then every SFTP connection but the one being edited.
function fillBastions(c) {
  const select = input('ssh_tunnel');
  const others = state.bastions.filter((id) => !c || id !== c.conn_id);
  select.replaceChildren(
    el('option', { value: '', text: 'None: connect directly' }),
    ...others.map((id) => el('option', { value: id, text: id })),
  );
  select.value = '';
}

function fillForm(c) {
  const editing = c !== null;
  $('form-title').textContent = editing ? `Edit ${c.conn_id}` : 'New Connection';
  document.title = `${editing ? c.conn_id : 'New Connection'} · broked`;
  const id = input('conn_id');
  id.readOnly = editing;
  id.setAttribute('aria-readonly', String(editing));
  $('h-conn_id').hidden = editing;
  $('h-conn_id-fixed').hidden = !editing;
  id.setAttribute('aria-describedby', `e-conn_id ${editing ? 'h-conn_id-fixed' : 'h-conn_id'}`);
  $('form-delete').hidden = !editing || !can('write');
  input('type').value = editing ? c.type : state.types[0]?.type || '';
  for (const f of ['conn_id', 'host', 'schema', 'login', 'description']) {
    input(f).value = editing ? c[f] ?? '' : '';
  }
  input('port').value = editing && c.port != null ? String(c.port) : '';
  input('password').value = '';
  input('extra').value = '';
  input('region').value = '';
  fillBastions(c);
  $('f-clear-password').checked = false;
  $('f-clear-extra').checked = false;
  // A stored port other than the type's default (or none) is the user's: keep it on a type change.
  const storedDefault = editing ? state.typeMap.get(c.type)?.default_port ?? null : null;
  state.portTouched = editing && c.port !== storedDefault;
  applyType();
  applySecrets();
  state.baseline = snapshot();
  // What an edit's Save compares with, to PATCH only what changed (issue 18).
  state.baseBody = editing ? formBody(null, false) : null;
}

// Every control of the form, as it is now: compared with the baseline to know if it changed.
function snapshot(skip = []) {
  const values = [];
  for (const e of $('conn-form').elements) {
    if (!e.id || skip.includes(e.id)) continue;
    values.push([e.id, e.type === 'checkbox' ? e.checked : e.value]);
  }
  return JSON.stringify(values);
}

// What a Test uses: everything but the description.
function testSnapshot() {
  return snapshot(['f-description']);
}

function formChanged() {
  return !$('view-form').hidden && state.baseline !== null && snapshot() !== state.baseline;
}

// Show, label and mark the fields for the selected type.
function applyType() {
  const t = currentType();
  if (!t) return;
  const labels = t.labels || {};
  $('h-type').textContent = t.use_case ? `${t.label}: ${t.use_case}.` : '';
  for (const f of TYPE_FIELDS) {
    const use = (t.fields && t.fields[f]) || 'optional';
    const box = fieldBox(f);
    box.hidden = use === 'unused';
    box.querySelector('.label-text').textContent = labels[f] || f;
    box.querySelector('.opt').hidden = use !== 'optional';
    input(f).required = use === 'required';
    input(f).setAttribute('aria-required', String(use === 'required'));
  }
  fieldBox('region').hidden = t.type !== 's3';
  // A local SQLite file is never behind a bastion; without an SFTP connection there is none.
  fieldBox('ssh_tunnel').hidden = t.type === 'sqlite' || input('ssh_tunnel').options.length < 2;
  $('h-host').textContent = t.host_hint || '';
  $('h-schema').textContent = t.schema_hint && t.schema_hint !== labels.schema ? t.schema_hint : '';
  const port = input('port');
  port.placeholder = t.default_port != null ? String(t.default_port) : '';
  $('h-port').textContent = t.default_port != null
    ? `${t.label} uses ${t.default_port} when empty.`
    : '';
  if (!state.portTouched) port.value = t.default_port != null ? String(t.default_port) : '';
  const example = t.extra_example;
  $('h-extra').textContent = `A JSON object${example ? `, e.g. ${example}` : ''}. Encrypted at rest.`;
}

// Stored secrets are never shown: a placeholder says one is stored, empty keeps it.
function applySecrets() {
  const c = state.editing;
  const hasPassword = Boolean(c && c.password);
  const hasExtra = Boolean(c && c.extra);
  const pw = input('password');
  pw.placeholder = hasPassword ? MASK : '';
  pw.disabled = $('f-clear-password').checked;
  $('h-password').textContent = hasPassword
    ? 'A password is stored. Leave this empty to keep it, or type a new one.'
    : '';
  $('clear-password-row').hidden = !hasPassword;
  const extra = input('extra');
  extra.placeholder = hasExtra ? `${MASK} (stored; leave empty to keep it)` : '';
  extra.disabled = $('f-clear-extra').checked;
  $('clear-extra-row').hidden = !hasExtra;
  if (hasExtra) {
    $('h-region').textContent = 'Saved in extra as "region"; the other keys of the stored extra are kept.';
    $('h-ssh_tunnel').textContent = 'Saved in extra as "ssh_tunnel"; the other keys of the stored '
      + 'extra are kept (it is not shown, so a stored bastion shows as None).';
  } else {
    $('h-region').textContent = 'For example eu-west-1. Saved in extra as "region".';
    $('h-ssh_tunnel').textContent = 'Reach this connection through an SFTP connection (its host key '
      + 'pinned) as an SSH tunnel: host and port are then as the bastion sees them. Saved in extra '
      + 'as "ssh_tunnel". A failed Test names the hop that failed.';
  }
}

// ---------------------------------------------------------------------------------------------
// Errors: in the words of the form (its labels), every one at once, each beside its field and
// listed in the banner with a link to it.

// The label a person sees for a field (URL, Bucket, Endpoint… per type).
function labelOf(field) {
  if (FIXED_LABELS[field]) return FIXED_LABELS[field];
  const box = fieldBox(field);
  const text = box && box.querySelector('.label-text');
  return text ? text.textContent : field;
}

function problem(field, text) {
  return { field, text: `${labelOf(field)}: ${text}` };
}

// An API message about a field, said with the form's labels; never a raw pattern.
function humanize(field, message) {
  const label = labelOf(field);
  const t = currentType();
  let m = String(message || '').trim();
  if (field === 'conn_id' && /required/.test(m)) return `${label}: enter one, such as prod-postgres.`;
  if (field === 'conn_id') return `${label}: ${ID_TEXT}`;
  if (field === 'port' && /integer/.test(m)) return `${label}: ${PORT_TEXT}`;
  if (/ is required\b/.test(m)) return `${label}: required${t ? ` for ${t.label} connections` : ''}.`;
  if (field === 'password' || field === 'extra') {
    // A stored secret is never sent to another target: the server asks to type it again.
    const clear = `tick “Clear the stored ${field}”`;
    const what = `type the ${field === 'password' ? label.toLowerCase() : 'extra'} again or ${clear}`;
    if (/type, host, port or login changes/.test(m)) {
      return `${label}: the type, host, port or login changed, so ${what}. A stored secret is never sent to another server.`;
    }
    if (/changes how the target is secured/.test(m)) {
      return `${label}: the extra settings that secure the connection (TLS, certificates, host key) changed, so ${what}.`;
    }
    m = m.replace(/\(?or send null to clear it\)?/g, `or ${clear}`);
  }
  m = m.replace(/\s*\(\^.*?\$\)/g, '');
  m = m.replace(/\b(postgres|mysql|sqlite|http|sftp|s3|generic)( connections?)\b/g,
    (_, type, rest) => `${typeLabel(type)}${rest}`);
  m = m.replace(/\b(in|use) (host|port|schema|login|password|extra)\b/g, (_, w, f) => `${w} ${labelOf(f)}`);
  if (m.startsWith(`${field} `)) m = `${label}${m.slice(field.length)}`;
  m = m.replace(/[.\s]*$/, '.');
  return m.startsWith(label) ? m : `${label}: ${m.charAt(0).toLowerCase()}${m.slice(1)}`;
}

// Extra must be a JSON object. The message never repeats the value.
function extraProblem() {
  const raw = input('extra').value.trim();
  if (input('extra').disabled || raw === '') return { value: null };
  let v;
  try {
    v = JSON.parse(raw);
  } catch {
    return { problem: problem('extra', 'this is not valid JSON. It must be a JSON object, like {"sslmode": "require"}.') };
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    return { problem: problem('extra', 'it must be a JSON object, like {"sslmode": "require"}.') };
  }
  return { value: v };
}

// As one types: only the extra field's own message.
function checkExtra() {
  const r = extraProblem();
  clearError('extra');
  if (r.problem) setError('extra', r.problem.text);
  return r;
}

// What the browser can check before anything is sent, all at once and in the form's order.
// Returns the problems and the parsed extra.
function checkForm() {
  const t = currentType();
  const c = state.editing;
  const problems = [];
  if (c === null) {
    const id = input('conn_id').value.trim();
    if (id === '') problems.push(problem('conn_id', 'enter one, such as prod-postgres.'));
    else if (!ID_RULE.test(id)) problems.push(problem('conn_id', ID_TEXT));
  }
  for (const f of ['host', 'port', 'schema', 'login', 'password']) {
    if (!t || t.fields[f] !== 'required' || fieldBox(f).hidden) continue;
    // A URL in host may name the port (tcp://cache:6379): the server checks that one.
    if (f === 'port' && /:\/\//.test(input('host').value)) continue;
    const stored = f === 'password' && c && c.password && !$('f-clear-password').checked;
    if (!stored && input(f).value.trim() === '') problems.push(problem(f, `required for ${t.label} connections.`));
  }
  const port = input('port').value.trim();
  if (!fieldBox('port').hidden && port !== '') {
    const n = /^\d+$/.test(port) ? Number(port) : NaN;
    if (!(n >= 1 && n <= 65535)) problems.push(problem('port', PORT_TEXT));
  }
  const extra = extraProblem();
  if (extra.problem) problems.push(extra.problem);
  return { problems, extra: extra.value ?? null };
}

// Shows problems beside their fields and as the banner's summary; focus goes to the first.
function showProblems(problems, what) {
  clearErrors();
  const fields = [...document.querySelectorAll('#conn-form .field')].map((b) => b.dataset.field);
  const order = (p) => {
    const i = fields.indexOf(p.field);
    return i < 0 ? fields.length : i;
  };
  const sorted = [...problems].sort((a, b) => order(a) - order(b));
  for (const p of sorted) p.placed = setError(p.field, p.text);
  const n = sorted.length;
  showBanner(n === 1 ? `${what}: correct this first.` : `${what}: correct these ${n} problems first.`, sorted);
  restoreFocus(firstInvalid());
}

function setError(field, message) {
  const box = fieldBox(field);
  const err = $(`e-${field}`);
  if (!box || !err || box.hidden) return false;
  if (err.textContent !== '' && !err.hidden) {
    if (!err.textContent.includes(message)) err.textContent += ` ${message}`;
  } else {
    err.textContent = message;
  }
  err.hidden = false;
  box.classList.add('invalid');
  input(field).setAttribute('aria-invalid', 'true');
  return true;
}

function clearError(field) {
  const err = $(`e-${field}`);
  if (!err) return;
  err.textContent = '';
  err.hidden = true;
  fieldBox(field).classList.remove('invalid');
  input(field).removeAttribute('aria-invalid');
}

function clearErrors() {
  for (const f of FORM_FIELDS) clearError(f);
  hideBanner();
}

function firstInvalid() {
  return document.querySelector('#conn-form [aria-invalid="true"]');
}

// Shows an API error: the fields it names as problems in the form's words; else the banner.
function showApiError(e, what) {
  if (e.fields.length > 0) {
    showProblems(e.fields.map((f) => ({ field: f.field, text: humanize(f.field, f.message) })), what);
  } else if (e.status === 409 && e.code === 'conflict' && state.editing === null) {
    showProblems([problem('conn_id', 'a connection with this ID exists already; choose another.')], what);
  } else {
    showBanner(`${what}: ${e.message}`);
  }
}

function portValue() {
  const raw = input('port').value.trim();
  if (raw === '') return null;
  return /^\d+$/.test(raw) ? Number(raw) : raw; // checkForm refuses anything else first
}

function text(field) {
  const v = input(field).value.trim();
  return v === '' ? null : v;
}

// The JSON body of a save (or, with `forTest`, of POST /api/connections/test).
function formBody(extra, forTest) {
  const t = currentType();
  const c = state.editing;
  const update = c !== null && !forTest;
  const body = {};
  if (!update) body.conn_id = input('conn_id').value.trim();
  body.type = t.type;
  for (const f of ['host', 'port', 'schema', 'login']) {
    if (t.fields[f] === 'unused') {
      if (update) body[f] = null;
      continue;
    }
    body[f] = f === 'port' ? portValue() : text(f);
  }
  // A URL in host names its own port (or the scheme's default): the type's default that the
  // form filled in by itself is not sent against it (the server refuses a port that disagrees).
  if (/:\/\//.test(body.host || '') && !state.portTouched) body.port = null;
  // password: typed → "clear" → null; left empty on edit → the mask, which keeps it.
  if (t.fields.password === 'unused') {
    if (update && c.password) body.password = null;
  } else if ($('f-clear-password').checked) {
    body.password = null;
  } else if (input('password').value !== '') {
    body.password = input('password').value;
  } else if (c && c.password) {
    body.password = MASK;
  }
  // extra: the same rules; an s3 region is merged into it.
  let obj = extra;
  const region = t.type === 's3' ? text('region') : null;
  if (region) obj = { ...(obj || {}), region };
  const bastion = fieldBox('ssh_tunnel').hidden ? null : text('ssh_tunnel');
  if (bastion) obj = { ...(obj || {}), ssh_tunnel: bastion };
  if (obj && update && extra === null && !$('f-clear-extra').checked) {
    // Only the region or bastion: a merge patch (the PATCH is application/merge-patch+json),
    // so the stored extra's other keys — and the secrets in them — are kept (issue 18).
    body.extra = obj;
  } else if (obj && update) {
    body.extra = JSON.stringify(obj); // typed in full, or cleared first: a string replaces it
  } else if (obj) {
    body.extra = obj;
  } else if ($('f-clear-extra').checked) {
    body.extra = null;
  } else if (c && c.extra) {
    body.extra = MASK;
  }
  if (!forTest) body.description = text('description');
  return body;
}

// An edit's Save sends only what changed since the form was loaded (PATCH): what another tab
// or person changed in other fields stays. "Save mine anyway" sends every field. A kept secret
// (the mask) is left out either way: absent keeps it.
function changedOnly(body, all) {
  const out = {};
  for (const [k, v] of Object.entries(body)) {
    if (v === MASK) continue;
    if (all || !state.baseBody || JSON.stringify(v) !== JSON.stringify(state.baseBody[k] ?? null)) out[k] = v;
  }
  return out;
}

// Someone else may have saved the connection since the form was loaded. Every write of an
// edit sends If-Match with the ETag the form read (issue 17): the server answers 412 when the
// connection has another version by now, and nothing is written. The form then reads what is
// saved, who saved it and which fields changed (the versions since), and asks.

// The ETag of a connection answer: its header, else the version it carries (the same tag).
function etagOf(c, meta) {
  if (meta && meta.etag) return meta.etag;
  return c && c.version != null ? `"${c.version}"` : null;
}

// Fields compared when the history cannot be read (fallback for the names of what changed).
const COMPARED = ['type', 'host', 'port', 'schema', 'login', 'password', 'extra', 'description'];

function changedMeanwhile(before, now) {
  return COMPARED.filter((f) => JSON.stringify(before[f] ?? null) !== JSON.stringify(now[f] ?? null));
}

function fieldName(f) {
  return f === 'type' ? 'Type' : labelOf(f);
}

// What happened to `before` since it was read: the saved connection now (null: deleted), its
// ETag, who wrote the versions since, and the names of the fields they changed.
async function whatChanged(before) {
  const meta = {};
  let now;
  try {
    now = await api('GET', `/api/connections/${enc(before.conn_id)}`, undefined, undefined, meta);
  } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
  let names = [];
  let actors = [];
  try {
    const since = (await api('GET', `/api/connections/${enc(before.conn_id)}/versions`))
      .filter((v) => before.version == null || v.version > before.version);
    for (const v of since) {
      for (const f of v.changed || []) if (!names.includes(f)) names.push(f);
      if (v.updated_by && !actors.includes(v.updated_by)) actors.push(v.updated_by);
    }
  } catch {
    names = changedMeanwhile(before, now);
  }
  if (actors.length === 0 && now.updated_by) actors = [now.updated_by];
  return { now, etag: etagOf(now, meta), names: names.map(fieldName), actors };
}

// "this connection was changed by ci since you opened it — reload to see the changes"
function changedText(conn_id, change) {
  const who = change.actors.length ? ` by ${change.actors.join(', ')}` : '';
  const what = change.names.length ? ` (changed: ${change.names.join(', ')})` : '';
  return `${conn_id} was changed${who} since you opened it${what} — reload to see the changes.`;
}

function deletedText(conn_id) {
  return `${conn_id} was deleted meanwhile. To keep it, create it again with New Connection.`;
}

let conflictCurrent = null;

function askConflict(change) {
  conflictCurrent = change;
  const { now } = change;
  $('conflict-title').textContent = `${now.conn_id} was changed meanwhile`;
  $('conflict-body').replaceChildren(
    el('p', { text: `${changedText(now.conn_id, change)} Your changes are not saved yet.` }),
    el('p', {
      class: 'explain',
      text: `It was saved again at ${formatTime(now.updated_at)} (version ${now.version}). `
        + 'Load the saved version discards your changes and shows what is saved now. Save mine '
        + 'anyway replaces that version with this form.',
    }),
  );
  $('conflict-dialog').showModal();
  $('conflict-stay').focus();
}

function closeConflict(choice) {
  const dialog = $('conflict-dialog');
  if (dialog.open) dialog.close();
  const change = conflictCurrent;
  conflictCurrent = null;
  const now = change && change.now;
  if (choice === 'overwrite' && now) {
    state.editing = now; // the form is now an edit of that version
    state.etag = change.etag;
    save(null, true);
  } else if (choice === 'load' && now) {
    state.editing = now;
    state.etag = change.etag;
    fillForm(now);
    $('test-result').replaceChildren();
    $('test-result').className = 'test-result';
    state.tested = null;
    $('form-status').textContent = `Loaded the version saved at ${formatTime(now.updated_at)}.`;
    showConnState(now);
    showHistory(now);
    restoreFocus(input('host').closest('.field').hidden ? input('type') : input('host'));
  } else {
    restoreFocus($('save'));
  }
}

async function save(e, overwrite = false) {
  if (e) e.preventDefault();
  if (state.busy) return;
  clearErrors();
  setNotice('');
  $('form-status').textContent = '';
  const checked = checkForm();
  if (checked.problems.length > 0) {
    $('form-status').textContent = 'Not saved: correct the marked fields.';
    showProblems(checked.problems, 'Not saved');
    return;
  }
  const c = state.editing;
  const body = formBody(checked.extra, false);
  state.busy = true;
  $('form-status').textContent = 'Saving…';
  try {
    if (c === null) {
      const created = await api('POST', '/api/connections', body);
      state.notice = `Saved ${created.conn_id}.`;
      $('form-status').textContent = '';
      leaveTo(`#/connections/${enc(created.conn_id)}`);
    } else {
      const meta = {};
      let saved;
      try {
        saved = await api('PATCH', `/api/connections/${enc(c.conn_id)}`, changedOnly(body, overwrite),
          undefined, { ifMatch: state.etag, meta });
      } catch (err) {
        if (err.status !== 412 && err.status !== 404) throw err;
        // Changed (412) or deleted (404) since the form read it: nothing was written.
        const change = err.status === 412 ? await whatChanged(c) : null;
        $('form-status').textContent = 'Not saved yet.';
        if (change === null) {
          $('form-status').textContent = 'Not saved.';
          showBanner(`Not saved: ${deletedText(c.conn_id)}`);
        } else {
          askConflict(change);
        }
        return;
      }
      state.editing = saved;
      state.etag = etagOf(saved, meta);
      fillForm(saved);
      $('form-status').textContent = `Saved ${saved.conn_id}.`;
      showHistory(saved);
    }
  } catch (err) {
    $('form-status').textContent = 'Not saved.';
    showApiError(err, 'Not saved');
  } finally {
    state.busy = false;
  }
}

// Test: a saved, unchanged connection is tested by id; anything else with the form's body
// (with the mask for untouched secrets, so the server uses the stored ones).
async function runTest() {
  if (state.busy) return;
  const out = $('test-result');
  clearErrors();
  const c = state.editing;
  let request;
  if (c !== null && !formChanged()) {
    request = () => api('POST', `/api/connections/${enc(c.conn_id)}/test`);
  } else {
    const checked = checkForm();
    if (checked.problems.length > 0) {
      out.className = 'test-result failure';
      out.replaceChildren(el('p', { text: 'Not tested: correct the marked fields.' }));
      state.tested = null;
      showProblems(checked.problems, 'Not tested');
      return;
    }
    const body = formBody(checked.extra, true);
    request = () => api('POST', '/api/connections/test', body);
  }
  const asked = testSnapshot();
  state.tested = asked;
  state.busy = true;
  out.className = 'test-result pending';
  out.replaceChildren(el('p', { text: 'Testing…' }));
  try {
    const r = await request();
    out.className = `test-result ${r.success ? 'success' : 'failure'}`;
    out.replaceChildren(
      el('p', {},
        el('strong', { class: 'outcome', text: r.success ? 'Success' : 'Failed' }),
        ' ',
        el('span', { class: 'message', text: r.message })),
      el('p', { class: 'meta' },
        'Driver ', el('code', { class: 'driver', text: r.driver }),
        ` · ${r.latency_ms} ms`,
        r.tls ? ` · ${TLS_TEXT[r.tls] || r.tls}` : ''),
    );
    const fingerprint = r.success ? null : unpinnedFingerprint(r.message);
    if (fingerprint) out.append(trustOffer(fingerprint));
  } catch (err) {
    out.className = 'test-result failure';
    out.replaceChildren(el('p', {}, el('strong', { class: 'outcome', text: 'Not tested' }), ' ', err.message));
    if (err.fields.length) showApiError(err, 'Not tested');
  } finally {
    state.busy = false;
  }
  if (testSnapshot() !== asked) markStale(); // changed while the test ran
}

// What protected the tested session (the test response's `tls`, issue 16).
const TLS_TEXT = {
  verified: 'TLS, verified',
  unverified: 'TLS, not verified',
  none: 'not encrypted',
};

// An SFTP test against a host whose key is not pinned fails with its fingerprint, before any
// password or key is sent (issue 16): the SHA256:… of that message, or null.
function unpinnedFingerprint(message) {
  if (!message.startsWith('host key not pinned:')) return null;
  const m = /SHA256:[A-Za-z0-9+/]{43}/.exec(message);
  return m ? m[0] : null;
}

// "Trust this host key": puts the fingerprint into the form's extra as host_key. Saving it
// keeps no stored secret: the library sends a stored password only to the host key it was
// saved with, so a saved connection needs its password (or key) typed again.
function trustOffer(fingerprint) {
  const note = el('p', { class: 'trust-note', id: 'trust-note' },
    `Check ${fingerprint} out of band (ssh-keygen -lf on the server's public host key) before you trust it.`);
  const button = el('button', {
    type: 'button', class: 'trust-host-key', onclick: () => trustHostKey(fingerprint, note),
  }, 'Trust this host key');
  return el('div', { class: 'trust' }, el('p', {}, button), note);
}

function trustHostKey(fingerprint, note) {
  const c = state.editing;
  const extra = input('extra');
  const stored = Boolean(c && c.extra) && extra.value.trim() === '' && !$('f-clear-extra').checked;
  if (stored) {
    note.textContent = `The stored extra is not shown, so it cannot be changed here: type extra again `
      + `with "host_key": "${fingerprint}" added, and the password, then Save.`;
    extra.focus();
    return;
  }
  let obj = {};
  if (extra.value.trim() !== '') {
    try { obj = JSON.parse(extra.value); } catch { obj = null; }
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    note.textContent = `Extra is not a JSON object: add "host_key": "${fingerprint}" to it by hand.`;
    extra.focus();
    return;
  }
  obj.host_key = fingerprint;
  extra.value = JSON.stringify(obj, null, 2);
  extra.dispatchEvent(new Event('input', { bubbles: true }));
  const passwordKept = Boolean(c && c.password) && input('password').value === '';
  if (passwordKept) {
    note.textContent = `${fingerprint} is in extra as host_key. Type the password again, then Save: `
      + 'a stored password is only sent to the host key it was saved with.';
    input('password').focus();
  } else {
    note.textContent = `${fingerprint} is in extra as host_key. Test again, then Save.`;
    extra.focus();
  }
}

// A result is about the form as it was tested: once a field a Test uses changes, it says so.
function markStale() {
  const out = $('test-result');
  if (!out.firstChild || out.classList.contains('stale') || out.classList.contains('pending')) return;
  out.className = 'test-result stale';
  out.prepend(el('p', { class: 'stale-note' },
    el('strong', { text: 'Out of date:' }),
    ' the form changed after this test. Test again to check the form as it is now.'));
}

// ---------------------------------------------------------------------------------------------
// History (issue 17): the connection's kept versions (GET …/versions, newest first) — number,
// time, who, the names of the fields each changed, deleted markers — one version as it was,
// masked like the form (GET …/versions/N), and Roll back to this version (POST …/rollback with
// If-Match, after a confirm). Beside it, the connection's audit records
// (GET /api/audit?conn_id=): who did what and how it ended — never a value.

const AUDIT_PAGE = 50;
let historyFor = null;   // the connection the panel is about
let versionShown = null; // the version shown below the list (GET …/versions/N), or null
let auditCursor = null;  // next_cursor of the audit records shown

function changedCell(v) {
  if (v.deleted) return el('strong', { class: 'deleted-marker', text: 'Deleted' });
  if (v.changed && v.changed.length) return v.changed.map(fieldName).join(', ');
  return v.version === 1 ? 'Created' : '—';
}

function versionRow(v) {
  const tr = el('tr', { 'data-version': String(v.version) });
  const number = el('td', { 'data-label': 'Version' }, el('strong', { text: String(v.version) }));
  if (v.current) number.append(' ', el('span', { class: 'status ok', text: 'current' }));
  const actions = el('td', { class: 'row-actions' });
  if (!v.deleted) {
    actions.append(el('button', {
      type: 'button',
      class: 'small view-version',
      'aria-label': `View version ${v.version}`,
      text: 'View',
      onclick: (e) => viewVersion(v.version, e.currentTarget),
    }));
  }
  tr.append(
    number,
    el('td', { 'data-label': 'Saved' }, el('time', { datetime: v.updated_at, text: formatTime(v.updated_at) })),
    el('td', { 'data-label': 'By', class: 'actor', text: v.updated_by || 'unknown' }),
    el('td', { 'data-label': 'Changed', class: 'changed' }, changedCell(v)),
    actions,
  );
  return tr;
}

async function showHistory(c) {
  $('history').hidden = c === null;
  historyFor = c;
  closeVersion(false);
  if (c === null) return;
  showAudit(c);
  const status = $('versions-status');
  status.textContent = 'Loading the versions…';
  let list;
  try {
    list = await api('GET', `/api/connections/${enc(c.conn_id)}/versions`);
  } catch (e) {
    if (historyFor !== c) return;
    $('version-rows').replaceChildren();
    $('versions-table').hidden = true;
    status.textContent = `Could not load the versions: ${e.message}`;
    return;
  }
  if (historyFor !== c) return; // another page (or a newer save) meanwhile
  $('version-rows').replaceChildren(...list.map(versionRow));
  $('versions-table').hidden = list.length === 0;
  const n = list.length;
  status.textContent = `${n} version${n === 1 ? '' : 's'} kept, newest first.`;
}

// One field of a version, as the form would show it: secrets only as set or not.
function versionField(label, value) {
  return [el('dt', { text: label }), el('dd', { text: value })];
}

async function viewVersion(n, opener) {
  const c = historyFor;
  if (!c) return;
  let v;
  try {
    v = await api('GET', `/api/connections/${enc(c.conn_id)}/versions/${n}`);
  } catch (e) {
    $('versions-status').textContent = `Could not load version ${n}: ${e.message}`;
    return;
  }
  if (historyFor !== c) return;
  versionShown = v;
  const conn = v.connection || {};
  const t = state.typeMap.get(conn.type);
  const labels = (t && t.labels) || {};
  const uses = (f) => !t || !t.fields || t.fields[f] !== 'unused';
  const items = [...versionField('Type', typeLabel(conn.type))];
  for (const f of ['host', 'port', 'schema', 'login']) {
    if (uses(f)) items.push(...versionField(labels[f] || f, conn[f] == null ? '—' : String(conn[f])));
  }
  if (uses('password')) {
    items.push(...versionField(labels.password || 'Password', conn.password ? `${MASK} (stored)` : 'not set'));
  }
  items.push(...versionField(labels.extra || 'Extra (JSON)', conn.extra ? `${MASK} (stored)` : 'not set'));
  items.push(...versionField('Description', conn.description || '—'));
  $('version-fields').replaceChildren(...items);
  $('version-view-title').textContent = `Version ${v.version}${v.current ? ' (current)' : ''}`;
  $('version-view-meta').textContent = `Saved ${formatTime(v.updated_at)} by ${v.updated_by || 'unknown'}`
    + `${v.changed && v.changed.length ? `; changed: ${v.changed.map(fieldName).join(', ')}` : ''}.`;
  $('version-rollback').hidden = v.current || v.deleted || !can('write');
  $('version-view').hidden = false;
  $('version-view').dataset.opener = opener && opener.closest('tr') ? opener.closest('tr').dataset.version : '';
  $('version-view-title').focus();
}

function closeVersion(restore = true) {
  const box = $('version-view');
  const n = box.dataset.opener;
  box.hidden = true;
  versionShown = null;
  $('version-fields').replaceChildren();
  if (restore && n) restoreFocus(document.querySelector(`#version-rows tr[data-version="${n}"] button`));
}

function askRollback() {
  const c = state.editing;
  const v = versionShown;
  if (!c || !v) return;
  $('rollback-title').textContent = `Roll back ${c.conn_id} to version ${v.version}?`;
  const body = [
    el('p', {
      text: `This saves a new version equal to version ${v.version}: every field, and the password `
        + `and extra stored with it. Version ${c.version} stays in the history, so this can be undone `
        + 'by rolling back to it.',
    }),
  ];
  if (formChanged()) body.push(el('p', { class: 'explain', text: 'Your unsaved changes in the form are discarded.' }));
  $('rollback-body').replaceChildren(...body);
  $('rollback-error').hidden = true;
  $('rollback-confirm').textContent = `Roll back to version ${v.version}`;
  $('rollback-dialog').showModal();
  $('rollback-cancel').focus();
}

function closeRollback(restore = true) {
  const dialog = $('rollback-dialog');
  if (dialog.open) dialog.close();
  if (restore) restoreFocus($('version-rollback'));
}

async function confirmRollback() {
  const c = state.editing;
  const v = versionShown;
  if (!c || !v || state.busy) return;
  state.busy = true;
  $('rollback-error').hidden = true;
  try {
    const meta = {};
    const now = await api('POST', `/api/connections/${enc(c.conn_id)}/rollback`, { version: v.version },
      undefined, { ifMatch: state.etag, meta });
    closeRollback(false);
    state.editing = now;
    state.etag = etagOf(now, meta);
    fillForm(now);
    $('test-result').replaceChildren();
    $('test-result').className = 'test-result';
    state.tested = null;
    $('form-status').textContent = '';
    hideBanner();
    setNotice(`Rolled back ${now.conn_id} to version ${v.version}: saved as version ${now.version}.`);
    showConnState(now);
    showHistory(now);
    $('form-title').focus();
  } catch (e) {
    let message = e.message;
    if (e.status === 412) {
      try {
        const change = await whatChanged(c);
        message = change === null ? deletedText(c.conn_id) : changedText(c.conn_id, change);
      } catch {
        // the server's own message
      }
    }
    $('rollback-error').textContent = `Not rolled back: ${message}`;
    $('rollback-error').hidden = false;
  } finally {
    state.busy = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Password rotation on the database server (docs/rotation.md): postgres and mysql connections.

const ROTATABLE = new Set(['postgres', 'mysql']);

function rotationText(r) {
  const parts = [];
  parts.push(r.last_rotated_at ? `Last rotated ${formatTime(r.last_rotated_at)}.` : 'Never rotated by broked.');
  if (r.rotate_every) {
    parts.push(`Rotated every ${r.rotate_every} (extra.rotate_every); next due ${formatTime(r.next_due_at)}.`);
  } else if (!r.schedule_error) {
    parts.push('No schedule (set extra.rotate_every, such as "30d", to rotate it regularly).');
  }
  if (r.pending) parts.push('An unfinished rotation is being settled.');
  return parts.join(' ');
}

// The panel on the connection page: when it was last rotated, its schedule, the last failure,
// and the Rotate password button (write scope). `keepResult`: the last rotation's result stays.
async function showRotation(c, keepResult = false) {
  const box = $('rotation');
  const show = c !== null && ROTATABLE.has(c.type);
  box.hidden = !show;
  if (!show) return;
  $('rotate').hidden = !can('write');
  if (!keepResult) {
    $('rotate-result').replaceChildren();
    $('rotate-result').className = 'test-result';
  }
  const line = $('rotation-state');
  line.replaceChildren('Loading the rotation state…');
  let r;
  try {
    r = await api('GET', `/api/connections/${enc(c.conn_id)}/rotation`);
  } catch (e) {
    if (state.editing !== c) return;
    line.replaceChildren(el('span', { class: 'error', text: `Could not read the rotation state: ${e.message}` }));
    return;
  }
  if (state.editing !== c) return; // another page meanwhile
  line.replaceChildren(rotationText(r));
  const problem = r.schedule_error || (r.last_error
    ? `The last rotation (${formatTime(r.last_attempt_at)}) failed${r.failures > 1 ? ` (${r.failures} times in a row)` : ''}: ${r.last_error}`
    : null);
  if (problem) line.append(' ', el('strong', { class: 'failing', text: problem }));
}

function askRotate() {
  const c = state.editing;
  if (!c || !ROTATABLE.has(c.type)) return;
  const where = `${c.host || 'the server'}${c.port ? `:${c.port}` : ''}`;
  $('rotate-title').textContent = `Rotate the password of ${c.conn_id}?`;
  const body = [
    el('p', {
      text: `This changes the password of ${c.login ? `the role "${c.login}"` : 'the login'} on the `
        + `database server ${where} itself: a new random password is set there, checked with a fresh `
        + 'login, and stored in this connection (a new version).',
    }),
    el('p', {
      text: 'The old password stops working for new logins, also anywhere else it is used. Pipelines '
        + 'that resolve this connection get the new one; sessions already open keep working. '
        + 'The new password is not shown.',
    }),
    el('p', {
      class: 'explain',
      text: 'If a step fails, the stored password is kept as one that logs in (the server is set back).',
    }),
  ];
  if (formChanged()) {
    body.push(el('p', {
      class: 'explain',
      text: 'The rotation uses the saved connection, not your unsaved changes in the form.',
    }));
  }
  $('rotate-body').replaceChildren(...body);
  $('rotate-dialog').showModal();
  $('rotate-cancel').focus();
}

function closeRotate(restore = true) {
  const dialog = $('rotate-dialog');
  if (dialog.open) dialog.close();
  if (restore) restoreFocus($('rotate'));
}

async function confirmRotate() {
  const c = state.editing;
  if (!c || state.busy) return;
  closeRotate();
  state.busy = true;
  const out = $('rotate-result');
  out.className = 'test-result pending';
  out.replaceChildren(el('p', { text: 'Rotating the password on the server…' }));
  $('rotate').disabled = true;
  try {
    const r = await api('POST', `/api/connections/${enc(c.conn_id)}/rotate-password`);
    out.className = 'test-result success';
    out.replaceChildren(
      el('p', {},
        el('strong', { class: 'outcome', text: 'Password rotated' }),
        ' ',
        el('span', {
          class: 'message',
          text: `The password of "${r.role}" was changed on the server${r.via ? ` through ${r.via}` : ''}, `
            + 'a login with the new one worked, and it is stored. The old password no longer logs in.',
        })),
      el('p', { class: 'meta', text: `Sent as ${r.sent_as} · ${formatTime(r.rotated_at)}` }),
    );
    // The rotation saved a new version: take it (and its ETag) when the form has no edits.
    if (state.editing === c && !formChanged()) {
      const meta = {};
      const now = await api('GET', `/api/connections/${enc(c.conn_id)}`, undefined, undefined, meta);
      state.editing = now;
      state.etag = etagOf(now, meta);
      fillForm(now);
      showConnState(now);
      showHistory(now);
    }
  } catch (e) {
    out.className = 'test-result failure';
    out.replaceChildren(el('p', {},
      el('strong', { class: 'outcome', text: 'Not rotated' }), ' ',
      el('span', { class: 'message', text: e.message })));
  } finally {
    state.busy = false;
    $('rotate').disabled = false;
  }
  if (state.editing && state.editing.conn_id === c.conn_id) showRotation(state.editing, true);
}

function auditRow(r) {
  return el('tr', { 'data-seq': String(r.seq) },
    el('td', { 'data-label': 'Time' }, el('time', { datetime: r.at, text: formatTime(r.at) })),
    el('td', { 'data-label': 'Actor', class: 'actor', text: r.actor || '' }),
    el('td', { 'data-label': 'Action', text: r.action || '' }),
    el('td', { 'data-label': 'Fields', text: r.fields && r.fields.length ? r.fields.map(fieldName).join(', ') : '—' }),
    el('td', { 'data-label': 'Outcome', text: r.outcome || '' }));
}

// The connection's audit records, a page at a time. Hidden when the server has no audit log;
// a token that may not read it is told so.
async function showAudit(c, more = false) {
  const panel = $('audit-panel');
  const status = $('audit-status');
  if (!more) auditCursor = null;
  const params = new URLSearchParams({ conn_id: c.conn_id, limit: String(AUDIT_PAGE) });
  if (more && auditCursor !== null) params.set('cursor', String(auditCursor));
  let page;
  try {
    page = await api('GET', `/api/audit?${params}`);
  } catch (e) {
    if (historyFor !== c) return;
    if (e.status === 404 || e.status === 405) {
      panel.hidden = true; // a server without the audit log
      return;
    }
    panel.hidden = false;
    $('audit-table').hidden = true;
    $('audit-more').hidden = true;
    status.textContent = e.status === 403
      ? 'The audit log is read with an admin token.'
      : `Could not load the audit log: ${e.message}`;
    return;
  }
  if (historyFor !== c) return;
  panel.hidden = false;
  const records = (page && page.records) || [];
  const rows = records.map(auditRow);
  if (more) $('audit-rows').append(...rows);
  else $('audit-rows').replaceChildren(...rows);
  auditCursor = page && page.next_cursor != null ? page.next_cursor : null;
  $('audit-more').hidden = auditCursor === null;
  const n = $('audit-rows').children.length;
  $('audit-table').hidden = n === 0;
  status.textContent = n === 0
    ? 'No audit records of this connection.'
    : `${n} record${n === 1 ? '' : 's'}, newest first${auditCursor === null ? '' : ' (there are older ones)'}.`;
}

// ---------------------------------------------------------------------------------------------
// Delete, with the pipelines that use the connection

let deleteOpener = null;
let deleteTarget = null;
let deleteForce = false;
let deleteTag = null; // the ETag of the version the person saw (If-Match of the DELETE)

async function openDelete(id, opener, tag = null) {
  const dialog = $('delete-dialog');
  deleteOpener = opener;
  deleteTarget = id;
  deleteForce = false;
  deleteTag = tag;
  $('delete-title').textContent = `Delete ${id}?`;
  $('delete-error').hidden = true;
  $('delete-body').replaceChildren(el('p', { text: 'Looking for pipelines that use it…' }));
  $('delete-confirm').hidden = true;
  dialog.showModal();
  $('delete-cancel').focus();
  try {
    const usage = await api('GET', `/api/connections/${enc(id)}/used-by`);
    renderUsage(id, usage.pipelines || []);
  } catch (e) {
    $('delete-body').replaceChildren();
    $('delete-error').textContent = `Could not check which pipelines use it: ${e.message}`;
    $('delete-error').hidden = false;
    renderUsage(id, null);
  }
}

function renderUsage(id, pipelines) {
  const body = $('delete-body');
  const confirm = $('delete-confirm');
  body.replaceChildren();
  if (pipelines && pipelines.length > 0) {
    deleteForce = true;
    const n = pipelines.length;
    body.append(
      el('p', { text: `${id} is used by ${n} pipeline${n === 1 ? '' : 's'}:` }),
      el('ul', { class: 'pipelines' }, ...pipelines.map((p) => el('li', {},
        el('strong', { text: p.name || p.pipeline_id }),
        ` (${p.pipeline_id})`,
        p.nodes && p.nodes.length ? ` — node${p.nodes.length === 1 ? '' : 's'} ${p.nodes.join(', ')}` : ''))),
      el('p', {
        class: 'explain',
        text: 'The server refuses to delete a connection while pipelines use it (409 in use). '
          + 'Remove it from them first, or delete it anyway: their references will then point '
          + 'at a connection that does not exist, and those pipelines will fail until one with '
          + 'this ID is created again.',
      }),
    );
    confirm.textContent = 'Delete anyway';
  } else {
    deleteForce = false;
    if (pipelines) body.append(el('p', { text: `No pipeline uses ${id}. Deleting it cannot be undone.` }));
    confirm.textContent = 'Delete';
  }
  confirm.hidden = false;
}

async function confirmDelete() {
  const id = deleteTarget;
  if (!id || state.busy) return;
  state.busy = true;
  $('delete-error').hidden = true;
  try {
    await api('DELETE', `/api/connections/${enc(id)}${deleteForce ? '?force=true' : ''}`, undefined,
      undefined, { ifMatch: deleteTag });
    closeDelete(false);
    state.notice = `Deleted ${id}.`;
    if (parseRoute().view === 'list') {
      route(true);
    } else {
      leaveTo('#/connections');
    }
  } catch (e) {
    if (e.status === 409 && e.pipelines) {
      renderUsage(id, e.pipelines); // it came into use meanwhile
    } else if (e.status === 412) {
      // Saved again since the person read it: nothing deleted; say by whom and what.
      let change = null;
      try {
        change = await whatChanged(state.editing && state.editing.conn_id === id
          ? state.editing : { conn_id: id, version: Number(String(deleteTag).replace(/"/g, '')) });
      } catch {
        change = { now: { conn_id: id }, names: [], actors: [] };
      }
      $('delete-error').textContent = change === null
        ? `Not deleted: ${deletedText(id)}`
        : `Not deleted: ${changedText(id, change)}`;
      $('delete-error').hidden = false;
    } else {
      $('delete-error').textContent = `Not deleted: ${e.message}`;
      $('delete-error').hidden = false;
    }
  } finally {
    state.busy = false;
  }
}

function closeDelete(restore = true) {
  const dialog = $('delete-dialog');
  if (dialog.open) dialog.close();
  deleteTarget = null;
  if (restore) restoreFocus(deleteOpener);
  deleteOpener = null;
}

// ---------------------------------------------------------------------------------------------
// Start

function fillTypeSelects() {
  const filter = $('type-filter');
  const type = input('type');
  for (const t of state.types) {
    filter.append(el('option', { value: t.type, text: t.label }));
    type.append(el('option', { value: t.type, text: t.label }));
  }
}

let extraTimer = 0;

async function start() {
  $('banner-close').addEventListener('click', hideBanner);
  $('type-filter').addEventListener('change', loadList);
  $('status-filter').addEventListener('change', loadList);
  $('search').addEventListener('input', onSearchInput);
  $('page-next').addEventListener('click', nextPage);
  $('page-prev').addEventListener('click', prevPage);
  $('test-all').addEventListener('click', runTestAll);
  $('test-all-cancel').addEventListener('click', cancelTestAll);
  const form = $('conn-form');
  form.addEventListener('submit', save);
  form.addEventListener('input', (e) => {
    if (state.tested !== null && testSnapshot() !== state.tested) markStale();
    if (e.target === input('port')) state.portTouched = input('port').value.trim() !== '';
    if (e.target === input('extra')) {
      // Checked as one types, after a pause (and again before Save and Test). Not on blur:
      // a message appearing then would move the Save button under the pointer.
      clearTimeout(extraTimer);
      extraTimer = setTimeout(checkExtra, $('e-extra').hidden ? 700 : 150);
    }
    if (e.target.id && e.target.id.startsWith('f-') && e.target !== input('extra')) {
      clearError(e.target.id.slice(2));
    }
  });
  input('type').addEventListener('change', applyType);
  $('f-clear-password').addEventListener('change', applySecrets);
  $('f-clear-extra').addEventListener('change', () => {
    applySecrets();
    checkExtra();
  });
  $('test').addEventListener('click', runTest);
  $('form-delete').addEventListener('click', (e) => {
    if (state.editing) openDelete(state.editing.conn_id, e.currentTarget, state.etag);
  });
  $('delete-confirm').addEventListener('click', confirmDelete);
  $('delete-cancel').addEventListener('click', () => closeDelete());
  $('delete-dialog').addEventListener('cancel', (e) => {
    e.preventDefault();
    closeDelete();
  });
  $('version-rollback').addEventListener('click', askRollback);
  $('version-close').addEventListener('click', () => closeVersion());
  $('audit-more').addEventListener('click', () => {
    if (historyFor) showAudit(historyFor, true);
  });
  $('rotate').addEventListener('click', askRotate);
  $('rotate-confirm').addEventListener('click', confirmRotate);
  $('rotate-cancel').addEventListener('click', () => closeRotate());
  $('rotate-dialog').addEventListener('cancel', (e) => {
    e.preventDefault();
    closeRotate();
  });
  $('rollback-confirm').addEventListener('click', confirmRollback);
  $('rollback-cancel').addEventListener('click', () => closeRollback());
  $('rollback-dialog').addEventListener('cancel', (e) => {
    e.preventDefault();
    closeRollback();
  });
  $('conflict-overwrite').addEventListener('click', () => closeConflict('overwrite'));
  $('conflict-load').addEventListener('click', () => closeConflict('load'));
  $('conflict-stay').addEventListener('click', () => closeConflict('stay'));
  $('conflict-dialog').addEventListener('cancel', (e) => {
    e.preventDefault();
    closeConflict('stay');
  });
  $('leave-discard').addEventListener('click', () => closeLeave(true));
  $('leave-stay').addEventListener('click', () => closeLeave(false));
  $('leave-dialog').addEventListener('cancel', (e) => {
    e.preventDefault();
    closeLeave(false);
  });
  document.addEventListener('click', onLinkClick, true);
  window.addEventListener('hashchange', onHashChange);
  // Closing or reloading the tab with unsaved changes: the browser asks.
  window.addEventListener('beforeunload', (e) => {
    if (formChanged()) {
      e.preventDefault();
      e.returnValue = '';
    }
  });

  try {
    state.types = await api('GET', '/api/connection-types');
  } catch (e) {
    showBanner(`Could not load the connection types: ${e.message}`);
    state.types = [];
  }
  state.typeMap = new Map(state.types.map((t) => [t.type, t]));
  fillTypeSelects();
  await loadGrant();
  document.body.classList.add('ready');
  await route(false);
}

start();
