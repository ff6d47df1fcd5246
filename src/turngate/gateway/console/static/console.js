// The console's entry point: the views (by the URL's #fragment), the live feed of the
// gateway's events, and when to read the gateway again.
//
// Reading again: an event that concerns the view on screen asks for a refresh soon (a burst
// of events makes one request); a refresh already under way is followed by one more; every
// view is also read every few seconds in case an event was missed, and re-drawn every second
// so that ages move.

import { ApiError, getJSON, postJSON, whenSignedOut } from './api.js';
import { ActivityLog } from './activity.js';
import { connectionsView } from './connections.js';
import { toast } from './dialog.js';
import { fill, h } from './dom.js';
import { gatewayView, summaryLine } from './gateway.js';
import { lanesView } from './lanes.js';
import { sessionView } from './session.js';
import { sessionsView } from './sessions.js';
import { syncClock } from './format.js';

const EVENT_REFRESH_MS = 150;
const PROGRESS_REFRESH_MS = 1000;
const POLL_MS = 5000;
const HEADER_POLL_MS = 15000;
const TICK_MS = 1000;
const FEED_RETRY_MS = 5000;

const main = document.getElementById('view');
const live = document.getElementById('live');
const summary = document.getElementById('gateway-summary');
const signout = document.getElementById('signout');
const activity = new ActivityLog();

let current = null;
let gateway = null;
let refreshTimer = null;
let refreshDue = 0;
let refreshing = false;
let refreshAgain = false;

const ctx = {
  activity,
  navigate: (hash) => {
    window.location.hash = hash;
  },
  refreshSoon: () => refreshSoon(EVENT_REFRESH_MS),
  gatewayAnswered: (answer) => {
    gateway = answer;
    renderHeader();
  },
};

whenSignedOut(() => window.location.reload());

// -- views ---------------------------------------------------------------------------------

function route() {
  const hash = window.location.hash || '#/sessions';
  let name = 'sessions';
  let make = () => sessionsView(ctx);
  if (hash.startsWith('#/session/')) {
    let key = null;
    try {
      key = decodeURIComponent(hash.slice('#/session/'.length));
    } catch {
      key = null;
    }
    if (key) {
      name = `session:${key}`;
      make = () => sessionView(ctx, key);
    }
  } else if (hash === '#/lanes') {
    name = 'lanes';
    make = () => lanesView(ctx);
  } else if (hash === '#/connections') {
    name = 'connections';
    make = () => connectionsView(ctx);
  } else if (hash === '#/gateway') {
    name = 'gateway';
    make = () => gatewayView(ctx);
  }
  if (current?.name === name) return;
  current?.view.close();
  current = { name, view: make(), error: h('p', { class: 'banner banner-error', 'data-testid': 'view-error', hidden: true }) };
  fill(main, current.error, current.view.root);
  const tab = name.startsWith('session:') ? 'sessions' : name;
  for (const link of document.querySelectorAll('.tabs a')) {
    link.classList.toggle('active', link.dataset.view === tab);
    if (link.dataset.view === tab) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${name.startsWith('session:') ? name.slice(8) : name} · turngate console`;
  refreshSoon(0);
}

function refreshSoon(delayMs) {
  const due = Date.now() + delayMs;
  if (refreshTimer !== null) {
    if (refreshDue <= due) return;
    clearTimeout(refreshTimer);
  }
  refreshDue = due;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh();
  }, delayMs);
}

async function refresh() {
  if (!current) return;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  const shown = current;
  try {
    await shown.view.refresh();
    shown.error.hidden = true;
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      shown.error.textContent =
        error instanceof ApiError ? `${error.code}: ${error.message}` : `Could not reach the gateway (${error.message ?? error}); retrying.`;
      shown.error.hidden = false;
    }
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      refreshSoon(EVENT_REFRESH_MS);
    }
  }
}

// -- the top bar -----------------------------------------------------------------------------

async function refreshHeader() {
  try {
    gateway = await getJSON('/console/api/gateway');
    syncClock(gateway.at);
    renderHeader();
  } catch {
    // the view's own refresh says what is wrong
  }
}

function renderHeader() {
  if (!gateway) return;
  fill(summary, summaryLine(gateway));
  signout.hidden = gateway.auth !== 'token';
}

signout.addEventListener('click', async () => {
  try {
    await postJSON('/console/logout');
  } catch (error) {
    toast(String(error.message ?? error), 'error');
    return;
  }
  window.location.reload();
});

// -- the live feed ---------------------------------------------------------------------------

function setLive(state, text = state) {
  live.dataset.state = state;
  live.textContent = text;
}

function connectFeed() {
  const source = new EventSource('/console/api/events');
  setLive('connecting');
  source.addEventListener('hello', (message) => {
    activity.reset(JSON.parse(message.data).recent);
    setLive('live');
    refreshSoon(0);
    refreshHeader();
  });
  source.addEventListener('change', (message) => onChange(JSON.parse(message.data)));
  source.addEventListener('end', (message) => {
    const { reason } = JSON.parse(message.data);
    setLive('reconnecting', reason === 'shutdown' ? 'gateway stopping' : 'reconnecting');
  });
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (signed out, too many consoles) or gone: ask why with a plain request (a 401
      // shows the sign-in form), and follow again later.
      setLive('offline');
      refreshHeader();
      setTimeout(connectFeed, FEED_RETRY_MS);
    } else {
      setLive('reconnecting');
    }
  });
}

function onChange(change) {
  activity.push(change);
  if (change.kind.startsWith('storage')) refreshHeader();
  if (!current || !current.view.wants(change)) return;
  refreshSoon(change.kind === 'progress' ? PROGRESS_REFRESH_MS : EVENT_REFRESH_MS);
}

// -- start -----------------------------------------------------------------------------------

window.addEventListener('hashchange', route);
route();
refreshHeader();
connectFeed();
setInterval(() => refreshSoon(0), POLL_MS);
setInterval(refreshHeader, HEADER_POLL_MS);
setInterval(() => {
  current?.view.render();
  renderHeader();
}, TICK_MS);
