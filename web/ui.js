// DOM views: which screen shows, the participant grid, chat, and the status banner.

export const $ = (id) => document.getElementById(id);

export function showView(id) {
  for (const view of ['lobby', 'room', 'message']) $(view).hidden = view !== id;
}

let bannerTimer = null;

/** Shows a status line; `kind` is info | warn | error. `ms` hides it again after a while. */
export function banner(text, kind = 'info', ms = 0) {
  const el = $('banner');
  clearTimeout(bannerTimer);
  if (!text) {
    el.hidden = true;
    return;
  }
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  if (ms) bannerTimer = setTimeout(() => { el.hidden = true; }, ms);
}

export function showMessage(title, text, { retry = false } = {}) {
  $('message-title').textContent = title;
  $('message-text').textContent = text;
  $('message-retry').hidden = !retry;
  showView('message');
}

function initials(name) {
  return name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('') || '?';
}

/** A participant tile: video, name label, mic state, connection dot. `role` is the test hook. */
export function ensureTile({ key, role, peer, name }) {
  let tile = document.querySelector(`.tile[data-key="${CSS.escape(key)}"]`);
  if (tile) return tile;
  tile = document.createElement('figure');
  tile.className = `tile tile-${role}`;
  tile.dataset.key = key;
  const video = document.createElement('video');
  video.dataset.role = role;
  if (peer) video.dataset.peer = peer;
  video.autoplay = true;
  video.playsInline = true;
  if (role !== 'remote') video.muted = true; // only a camera tile of someone else carries sound
  const avatar = document.createElement('div');
  avatar.className = 'avatar';
  const caption = document.createElement('figcaption');
  caption.innerHTML = '<span class="dot" title="connecting"></span><span class="name"></span><svg class="mic-off" viewBox="0 0 24 24" role="img" aria-label="Microphone muted" hidden><path d="M19 11h-1.7a5.3 5.3 0 0 1-.9 2.9l1.2 1.2A7 7 0 0 0 19 11zm-4 .2V5a3 3 0 0 0-5.9-.7zM4.3 3 3 4.3l6 6V11a3 3 0 0 0 4.5 2.6l1.6 1.6A5.3 5.3 0 0 1 7 11H5a7 7 0 0 0 6 6.9V21h2v-3.1a7 7 0 0 0 3.5-1.4l3.2 3.2 1.3-1.3z"/></svg>';
  // Pin (this tile large, the others in a strip) and full screen, over the tile's corner.
  const view = document.createElement('div');
  view.className = 'tile-view';
  view.innerHTML = '<button type="button" data-view="pin" title="Pin: show large" aria-label="Pin" aria-pressed="false">📌</button>'
    + '<button type="button" data-view="full" title="Full screen" aria-label="Full screen">⛶</button>';
  view.querySelector('[data-view="pin"]').addEventListener('click', () => pin(tile));
  view.querySelector('[data-view="full"]').addEventListener('click', () => {
    if (document.fullscreenElement === tile) document.exitFullscreen();
    else tile.requestFullscreen?.().catch(() => {});
  });
  tile.append(video, avatar, caption, view);
  $('grid').append(tile);
  setTileName(tile, name);
  return tile;
}

/** Buttons for a host's moderation: `actions` of {action, label, title, run}. */
function actionButtons(actions) {
  return actions.map(({ action, label, title, run }) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.action = action;
    b.textContent = label;
    b.title = title;
    b.setAttribute('aria-label', title);
    b.addEventListener('click', run);
    return b;
  });
}

/** A host's buttons over a tile; none removes them. */
export function setTileActions(tile, actions) {
  let bar = tile.querySelector('.tile-actions');
  if (!actions.length) {
    bar?.remove();
    return;
  }
  if (!bar) {
    bar = document.createElement('div');
    bar.className = 'tile-actions';
    tile.append(bar);
  }
  bar.replaceChildren(...actionButtons(actions));
}

/**
 * The list of people: `people` of {id, name, audio, video, screen, you, actions}. Mic and camera
 * state are words as well as strikes, so they do not rest on colour.
 */
export function renderPeople(people) {
  $('people-list').replaceChildren(...people.map((p) => {
    const li = document.createElement('li');
    li.dataset.peer = p.id;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = p.you ? `${p.name} (you)` : p.name;
    const media = document.createElement('span');
    media.className = 'media';
    const item = (on, onText, offText) => {
      const s = document.createElement('span');
      s.textContent = on ? onText : offText;
      if (!on) s.className = 'off';
      return s;
    };
    media.append(item(p.audio, 'mic on', 'mic off'), ' · ', item(p.video, 'camera on', 'camera off'));
    if (p.screen) media.append(' · sharing screen');
    li.append(who, media);
    if (p.actions.length) {
      const actions = document.createElement('div');
      actions.className = 'actions';
      actions.append(...actionButtons(p.actions));
      li.append(actions);
    }
    return li;
  }));
}

export function setTileName(tile, name) {
  tile.querySelector('.name').textContent = name;
  tile.querySelector('.avatar').textContent = initials(name);
}

export function setTileMedia(tile, { audio, video }) {
  tile.classList.toggle('video-off', !video);
  tile.querySelector('.mic-off').toggleAttribute('hidden', audio);
}

export function setTileConnection(tile, state) {
  const dot = tile.querySelector('.dot');
  dot.dataset.state = state;
  dot.title = state;
}

/** How well a participant's media arrives: `good`, `fair` or `poor`, with why in words. */
export function setTileQuality(tile, quality, why) {
  const dot = tile.querySelector('.dot');
  dot.dataset.quality = quality;
  dot.title = `Connection ${quality}: ${why}`;
}

export function removeTiles(filter) {
  document.querySelectorAll('.tile').forEach((tile) => {
    if (filter(tile)) tile.remove();
  });
  updateGridSize();
}

/** Tiles one page of the grid shows; the others wait on the next pages (and, in an SFU room,
 *  receive no video meanwhile: the page tells the server they are off screen). */
let tilesPerPage = 25;
let gridPage = 0;

/** Tiles one page of the grid shows. */
export function tilesPerPageNow() {
  return tilesPerPage;
}

export function setTilesPerPage(n) {
  tilesPerPage = Math.max(1, n);
  updateGridSize();
}

export function turnPage(delta) {
  gridPage += delta;
  updateGridSize();
}

/** Pins `tile` (or unpins it if it was): it is shown large, everyone else in a strip. */
export function pin(tile) {
  const was = tile.classList.contains('pinned');
  for (const t of document.querySelectorAll('.tile.pinned')) t.classList.remove('pinned');
  tile.classList.toggle('pinned', !was);
  for (const b of document.querySelectorAll('.tile-view [data-view="pin"]')) {
    b.setAttribute('aria-pressed', String(b.closest('.tile').classList.contains('pinned')));
  }
  layoutGrid();
}

/** Speaker view: the tile of `key` (the one speaking) is shown large; null for the grid. */
let featured = null;
let speakerView = false;
export function setSpeakerView(on) {
  speakerView = on;
  layoutGrid();
}
export function feature(key) {
  if (key === featured) return;
  featured = key;
  if (speakerView) layoutGrid();
}

export function updateGridSize() {
  const grid = $('grid');
  const tiles = [...grid.querySelectorAll('.tile')];
  const pages = Math.max(1, Math.ceil(tiles.length / tilesPerPage));
  gridPage = Math.max(0, Math.min(gridPage, pages - 1));
  tiles.forEach((t, i) => { t.hidden = Math.floor(i / tilesPerPage) !== gridPage; });
  const shown = tiles.filter((t) => !t.hidden).length;
  grid.dataset.count = String(Math.min(shown, 9));
  $('pager').hidden = pages === 1;
  $('pager-label').textContent = `Page ${gridPage + 1} of ${pages} · ${tiles.length - shown} more`;
  $('pager-prev').disabled = gridPage === 0;
  $('pager-next').disabled = gridPage === pages - 1;
  layoutGrid();
}

const GAP = 10;
/** What the last layout was made for. */
let lastLayout = '';

/** The width:height of the grid's tiles (16:9; 3:4 on a phone held upright, see style.css). */
function tileAspect(tile) {
  const [w, h] = (getComputedStyle(tile).aspectRatio || '16 / 9').split('/').map(Number);
  return w > 0 && h > 0 ? w / h : 16 / 9;
}

/** Sizes the tiles to fill the grid: as large as they can be in the columns that make them
 *  largest, never overlapping. A screen share or a pinned tile (or, in speaker view, who
 *  speaks) takes the stage with the others in a strip under it; in a call of two, yourself
 *  is a small picture in the corner. */
export function layoutGrid() {
  const grid = $('grid');
  const shown = [...grid.querySelectorAll('.tile')].filter((t) => !t.hidden);
  const W = grid.clientWidth;
  const H = grid.clientHeight;
  const byKey = (k) => shown.find((t) => t.dataset.key === k);
  const stage = shown.find((t) => t.classList.contains('pinned'))
    || shown.find((t) => t.classList.contains('screen'))
    || (speakerView && shown.length > 2 ? byKey(featured) || shown.find((t) => t.classList.contains('tile-remote')) : null);
  const self = shown.find((t) => t.classList.contains('self'));
  const pip = !stage && shown.length === 2 && self ? self : null;
  // Only when something it depends on changed: resizing tiles must not feed back into
  // another layout (and another report of tile sizes to an SFU) through the ResizeObserver.
  const inputs = `${W}x${H} ${stage?.dataset.key} ${pip ? 'pip' : ''} ${shown.map((t) => t.dataset.key).join(',')}`;
  if (inputs === lastLayout) return;
  lastLayout = inputs;
  for (const t of shown) {
    t.classList.toggle('staged', t === stage);
    t.classList.toggle('pip', t === pip);
    t.style.width = '';
    t.style.height = '';
  }
  grid.classList.toggle('has-stage', Boolean(stage));
  // Two pixels short of the grid: rounding must never add a scrollbar (which would resize it).
  if (W > 2 && H > 2) sizeTiles(grid, W - 2, H - 2, stage, shown.filter((t) => t !== stage && t !== pip));
  // What the page tells an SFU of its tiles' sizes follows (also when the grid is hidden).
  document.dispatchEvent(new Event('grid-layout'));
}

function sizeTiles(grid, W, H, stage, flowing) {
  if (stage) {
    // The strip: one row of small tiles under the stage.
    const stripH = flowing.length ? Math.min(150, Math.max(90, H * 0.2)) : 0;
    const stripW = stripH * 16 / 9;
    const perRow = Math.max(1, Math.floor((W + GAP) / (stripW + GAP)));
    const rows = Math.ceil(flowing.length / perRow);
    grid.style.gridTemplateColumns = `repeat(${Math.min(perRow, Math.max(1, flowing.length))}, ${Math.floor(stripW)}px)`;
    // As wide as the grid (centred over the strip's columns, which may be fewer).
    stage.style.width = `${Math.floor(W)}px`;
    stage.style.height = `${Math.max(160, Math.floor(H - rows * (stripH + GAP)))}px`;
    for (const t of flowing) t.style.height = `${Math.floor(stripH)}px`;
  } else {
    const n = Math.max(1, flowing.length);
    const aspect = flowing.length ? tileAspect(flowing[0]) : 16 / 9;
    let best = { cols: 1, w: 0 };
    for (let cols = 1; cols <= n; cols++) {
      const rows = Math.ceil(n / cols);
      const w = Math.min((W - GAP * (cols - 1)) / cols, ((H - GAP * (rows - 1)) / rows) * aspect);
      if (w > best.w) best = { cols, w };
    }
    grid.style.gridTemplateColumns = `repeat(${best.cols}, ${Math.floor(Math.max(120, best.w))}px)`;
  }
}

export function appendChat({ name, text, mine }) {
  const li = document.createElement('li');
  li.className = mine ? 'mine' : '';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = mine ? 'You' : name;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const body = document.createElement('p');
  body.textContent = text;
  li.append(who, time, body);
  const log = $('chat-log');
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

export function fillDeviceSelect(select, devices, current) {
  select.replaceChildren(...devices.map((d) => {
    const opt = document.createElement('option');
    opt.value = d.id;
    opt.textContent = d.label;
    opt.selected = d.id === current;
    return opt;
  }));
  select.disabled = devices.length === 0;
  if (devices.length === 0) {
    const opt = document.createElement('option');
    opt.textContent = 'None available';
    select.append(opt);
  }
}
