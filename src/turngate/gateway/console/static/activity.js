// The coordination log: the engine's events as they happen, one line each. This is what no
// other gateway shows: every turn accepted, queued, given a lease, started, its tools, its
// end, its lease released; cancellations, fencing and stale writes stand out.

import { h, fill } from './dom.js';
import { clock, fullTime, shortId } from './format.js';

const KEPT_MAX = 500;
const SHOWN_MAX = 200;

const ABNORMAL = new Set([
  'cancel_requested',
  'fenced',
  'stale_ignored',
  'stale_write_refused',
  'step_refused',
  'recovered',
  'owner_failed',
  'unstuck',
  'heartbeat_skipped',
  'lane_failed',
  'storage_failed',
  'storage_recovered',
]);

/** Whether an event is one a person running the gateway must see (the engine's rule). */
export function isAbnormal(change) {
  return ABNORMAL.has(change.kind) || (change.kind === 'ended' && change.state !== 'replied');
}

/** What the line says after the event's kind. */
function describe(c) {
  const turn = c.turnId ? `turn ${shortId(c.turnId)}` : '';
  const run = c.runId ? `run ${shortId(c.runId)}` : '';
  const epoch = c.epoch !== null && c.epoch !== undefined ? `epoch ${c.epoch}` : '';
  switch (c.kind) {
    case 'accepted':
      return [turn, c.lane !== 'direct' ? `lane ${c.lane}` : ''];
    case 'lease_acquired':
      return [epoch, run];
    case 'started':
      return [run, epoch];
    case 'tool_called':
      return [c.detail, c.state, run];
    case 'model_answered':
      return [c.detail, run];
    case 'ended':
      return [turn, c.state, c.code ?? ''];
    case 'lease_released':
    case 'run_exited':
      return [run, epoch];
    default:
      return [turn || run, epoch, c.state ?? '', c.code ?? '', c.detail];
  }
}

/** The events seen since the page opened (progress excluded), newest last. */
export class ActivityLog {
  constructor() {
    this.items = [];
    this.listeners = new Set();
  }

  /** Start again from the gateway's recent events (a feed just connected). */
  reset(recent) {
    this.items = recent.filter((change) => change.kind !== 'progress').slice(-KEPT_MAX);
    for (const listener of this.listeners) listener(null);
  }

  push(change) {
    if (change.kind === 'progress') return;
    this.items.push(change);
    if (this.items.length > KEPT_MAX) this.items.splice(0, this.items.length - KEPT_MAX);
    for (const listener of this.listeners) listener(change);
  }

  /** A live list of the log (of one session when sessionKey is given), newest first. */
  view(sessionKey = null) {
    const list = h('ol', { class: 'activity', 'data-testid': 'activity-log' });
    const matches = (c) => sessionKey === null || c.sessionKey === sessionKey;
    const render = () => {
      const shown = this.items.filter(matches).slice(-SHOWN_MAX).reverse();
      if (!shown.length) {
        fill(list, h('li', { class: 'empty' }, 'No events yet. They appear here as turns run.'));
        return;
      }
      fill(list, shown.map((c) => line(c, sessionKey === null)));
    };
    const listener = (c) => {
      if (c === null || matches(c)) render();
    };
    this.listeners.add(listener);
    render();
    return { element: list, close: () => this.listeners.delete(listener) };
  }
}

function line(c, withSession) {
  const words = describe(c)
    .flat()
    .filter((word) => word);
  return h(
    'li',
    {
      class: `event kind-${c.kind}${isAbnormal(c) ? ' abnormal' : ''}`,
      'data-kind': c.kind,
      'data-testid': 'activity-event',
      title: fullTime(c.at),
    },
    h('time', {}, clock(c.at, { millis: true })),
    h('span', { class: 'event-kind' }, c.kind.replaceAll('_', ' ')),
    withSession
      ? h('a', { class: 'event-session mono', href: `#/session/${encodeURIComponent(c.sessionKey)}` }, c.sessionKey)
      : null,
    h('span', { class: 'event-what' }, words.join(' · ')),
  );
}
