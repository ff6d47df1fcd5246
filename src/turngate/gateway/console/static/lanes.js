// Lanes: heartbeats (period, fired, skipped, next tick) and cron jobs (schedule, session,
// next and last fire), each job with a "Run now" button. Every lane's turns go through the
// same per-session queue as users' messages.

import { ApiError, getJSON, postJSON } from './api.js';
import { confirmAction, toast } from './dialog.js';
import { badge, emptyRow, fill, h, panel, table } from './dom.js';
import { ago, clock, count, duration, fullTime, syncClock, until } from './format.js';

const HEARTBEAT_COLUMNS = ['Agent', 'Session', ['Every', 'num'], ['Fired', 'num'], ['Skipped', 'num'], 'Next tick'];
const CRON_COLUMNS = ['Job', 'Agent', 'Schedule (UTC)', 'Session', 'Message', 'Next fire', 'Last fire', ''];

export function lanesView(ctx) {
  let answer = null;
  const heartbeats = table(HEARTBEAT_COLUMNS, { 'data-testid': 'heartbeats-table' });
  const cron = table(CRON_COLUMNS, { 'data-testid': 'cron-table' });
  const cronCount = h('span', { class: 'faint' });
  const root = h(
    'div',
    { class: 'view lanes-view', 'data-testid': 'lanes-view' },
    panel('Heartbeats', h('div', { class: 'table-wrap' }, heartbeats.table)),
    panel('Cron jobs', h('div', { class: 'table-wrap' }, cron.table), { controls: [cronCount] }),
  );

  async function refresh() {
    answer = await getJSON('/console/api/lanes');
    syncClock(answer.at);
    render();
  }

  function render() {
    if (!answer) return;
    cronCount.textContent = `${count(answer.cronFired)} fired since start`;
    fill(
      heartbeats.body,
      answer.heartbeats.length
        ? answer.heartbeats.map((lane) =>
            h(
              'tr',
              { 'data-testid': 'heartbeat-row', 'data-agent-id': lane.agentId },
              h('td', {}, lane.agentId),
              h('td', {}, sessionLink(lane.sessionKey)),
              h('td', { class: 'num' }, duration(lane.everyS)),
              h('td', { class: 'num' }, count(lane.fired)),
              h('td', { class: `num${lane.skipped ? ' warn-text' : ''}` }, count(lane.skipped)),
              h('td', { title: fullTime(lane.nextTickAt) }, `${clock(lane.nextTickAt)} (${until(lane.nextTickAt)})`),
            ),
          )
        : emptyRow(HEARTBEAT_COLUMNS.length, 'No heartbeats configured.'),
    );
    fill(
      cron.body,
      answer.cron.length
        ? answer.cron.map((job) =>
            h(
              'tr',
              { 'data-testid': 'cron-row', 'data-job-id': job.id },
              h('td', { class: 'mono' }, job.id),
              h('td', {}, job.agentId),
              h('td', { class: 'mono' }, job.schedule),
              h('td', {}, sessionLink(job.sessionKey)),
              h('td', { class: 'clip', title: job.message }, job.message),
              h('td', { title: fullTime(job.nextFireAt) }, job.nextFireAt ? `${clock(job.nextFireAt)} (${until(job.nextFireAt)})` : '–'),
              h('td', { title: fullTime(job.lastFireAt) }, job.lastFireAt ? ago(job.lastFireAt) : badge('never', 'muted')),
              h(
                'td',
                {},
                h(
                  'button',
                  { type: 'button', class: 'small', 'data-testid': 'cron-run', onclick: () => runNow(job) },
                  'Run now',
                ),
              ),
            ),
          )
        : emptyRow(CRON_COLUMNS.length, 'No cron jobs configured.'),
    );
  }

  async function runNow(job) {
    const ok = await confirmAction({
      title: `Run ${job.id} now?`,
      body: `Its message is sent to ${job.sessionKey} as a cron turn, queued behind anything running there. Its schedule does not change.`,
      confirm: 'Run now',
    });
    if (!ok) return;
    try {
      const done = await postJSON(`/console/api/cron/${encodeURIComponent(job.id)}/run`);
      toast(`${job.id}: turn ${done.runId} accepted`, 'ok');
    } catch (error) {
      toast(error instanceof ApiError ? `${error.code}: ${error.message}` : String(error), 'error');
    }
    ctx.refreshSoon();
  }

  return { root, refresh, render, wants: (change) => LANE_KINDS.has(change.kind) || change.lane !== 'direct', close() {} };
}

const LANE_KINDS = new Set(['cron_fired', 'heartbeat_skipped', 'lane_failed']);

export function sessionLink(key) {
  return h('a', { class: 'mono', href: `#/session/${encodeURIComponent(key)}` }, key);
}
