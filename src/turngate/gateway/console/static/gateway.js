// The gateway: version, uptime, configuration source, store (path, durability, writable),
// limits, agents, and a summary of its metrics (the figures /metrics exports).

import { getJSON } from './api.js';
import { badge, facts, fill, h, panel, table } from './dom.js';
import { clock, count, duration, fullTime, serverNow, syncClock } from './format.js';

/** The top bar's one line about the gateway, from a /console/api/gateway answer. */
export function summaryLine(g) {
  const up = g.startedAt ? duration(serverNow() - g.startedAt) : '–';
  return [
    h('span', { class: 'mono' }, `v${g.version}`),
    h('span', {}, `up ${up}`),
    g.store.writable
      ? h('span', { class: 'ok-text', 'data-testid': 'store-status' }, 'store ok')
      : h('span', { class: 'bad-text', 'data-testid': 'store-status', title: g.store.reason ?? '' }, 'store failing'),
  ];
}

export function gatewayView(ctx) {
  let answer = null;
  const body = h('div', { class: 'cards' });
  const root = h('div', { class: 'view gateway-view', 'data-testid': 'gateway-view' }, body);

  async function refresh() {
    answer = await getJSON('/console/api/gateway');
    syncClock(answer.at);
    ctx.gatewayAnswered(answer);
    render();
  }

  function render() {
    if (!answer) return;
    const g = answer;
    const m = g.metrics;
    const store = g.store;
    const agents = table(['Agent', 'Model', 'Queue mode', ['Tools', 'num'], ['Max steps', 'num']]);
    fill(
      agents.body,
      g.agents.agents.map((a) =>
        h('tr', {}, h('td', { class: 'mono' }, a.id), h('td', { class: 'mono' }, a.model), h('td', {}, a.queueMode), h('td', { class: 'num' }, a.tools), h('td', { class: 'num' }, a.maxSteps)),
      ),
    );
    fill(
      body,
      panel(
        'Gateway',
        facts([
          ['Status', badge(g.status, g.status === 'live' ? 'state-replied' : 'state-failed', { 'data-testid': 'gateway-status' })],
          ['Version', h('span', { class: 'mono' }, g.version)],
          ['Started', clock(g.startedAt), { title: fullTime(g.startedAt) }],
          ['Uptime', g.startedAt ? duration(serverNow() - g.startedAt) : '–'],
          ['Configuration', h('span', { class: 'mono' }, g.configFile ?? 'defaults and environment (no file)')],
          ['State directory', h('span', { class: 'mono' }, g.stateDir)],
          ['Sign-in', g.auth === 'token' ? 'gateway token' : 'open (no token configured)'],
        ]),
        { props: { 'data-testid': 'gateway-panel' } },
      ),
      panel(
        'Store',
        facts([
          ['Kind', store.kind],
          ['File', store.path ? h('span', { class: 'mono' }, store.path) : '–'],
          ['Durability', store.durability ?? '–'],
          ['Writable', store.writable ? badge('yes', 'state-replied') : badge('no', 'state-failed')],
          store.reason ? ['Last failure', h('span', { class: 'bad-text' }, store.reason)] : null,
          ['Write failures', count(store.writeFailures)],
          store.waitingSessions.length ? ['Waiting for storage', store.waitingSessions.join(', ')] : null,
          ['Sessions', count(g.sessions)],
        ]),
        { props: { 'data-testid': 'store-panel' } },
      ),
      panel(
        'Turns',
        h(
          'div',
          { class: 'metrics', 'data-testid': 'metrics-panel' },
          metric('accepted', m.turnsAccepted),
          metric('replied', m.turnsEnded.replied, 'ok'),
          metric('failed', m.turnsEnded.failed, m.turnsEnded.failed ? 'bad' : ''),
          metric('aborted', m.turnsEnded.aborted, m.turnsEnded.aborted ? 'warn' : ''),
          metric('rejected', m.turnsEnded.rejected, m.turnsEnded.rejected ? 'warn' : ''),
          metric('expired', m.turnsEnded.expired, m.turnsEnded.expired ? 'bad' : ''),
          metric('running now', g.runningTurns),
          metric('queued now', g.queuedTurns),
          metric('mean wait', duration(m.turnWaitMeanS)),
          metric('mean run', duration(m.turnRunMeanS)),
          metric('longest ready wait', duration(m.readyWaitMaxS), m.readyWaitMaxS > 1 ? 'warn' : ''),
          metric('oldest lease', duration(g.oldestLeaseAgeS)),
        ),
      ),
      panel(
        'Coordination',
        h(
          'div',
          { class: 'metrics' },
          metric('runs cancelled', m.runsCancelled),
          metric('watchdog aborts', m.watchdogAborts, m.watchdogAborts ? 'warn' : ''),
          metric('runs fenced', m.runsFenced, m.runsFenced ? 'warn' : ''),
          metric('stale writes refused', m.staleWritesRefused, m.staleWritesRefused ? 'bad' : ''),
          metric('stale reports ignored', m.staleReportsIgnored),
          metric('sessions unstuck', m.sessionsUnstuck, m.sessionsUnstuck ? 'warn' : ''),
          metric('owner failures', m.ownerFailures, m.ownerFailures ? 'bad' : ''),
          metric('storage write failures', m.storageWriteFailures, m.storageWriteFailures ? 'bad' : ''),
        ),
      ),
      panel(
        'Models, tools, lanes, edge',
        h(
          'div',
          { class: 'metrics' },
          metric('tool calls', m.toolCalls),
          metric('tool errors', m.toolCallErrors, m.toolCallErrors ? 'warn' : ''),
          metric('prompt tokens', m.promptTokens),
          metric('completion tokens', m.completionTokens),
          metric('cron fires', m.cronFires),
          metric('heartbeats skipped', m.heartbeatsSkipped, m.heartbeatsSkipped ? 'warn' : ''),
          metric('lane failures', m.laneFailures, m.laneFailures ? 'bad' : ''),
          metric('connections refused', m.connectionsRefused, m.connectionsRefused ? 'warn' : ''),
          metric('request timeouts', m.httpRequestTimeouts),
          metric('bad requests', m.httpBadRequests),
          g.deliveries ? metric('deliveries sent', g.deliveries.sent ?? 0) : null,
          g.deliveries ? metric('deliveries failed', g.deliveries.failed ?? 0, g.deliveries.failed ? 'bad' : '') : null,
        ),
      ),
      panel(
        'Limits',
        facts([
          ['Stall timeout', duration(g.limits.stallTimeoutS)],
          ['Run timeout', duration(g.limits.runTimeoutS)],
          ['Abort grace', duration(g.limits.abortGraceS)],
          ['Turn deadline', duration(g.limits.turnTimeoutS)],
          ['Queue per session', count(g.limits.queueTurnsMax)],
          ['Message', `${count(g.limits.messageCharsMax)} characters`],
        ]),
      ),
      panel(g.agents.open ? 'Agents (any agent id is served)' : 'Agents', h('div', { class: 'table-wrap' }, agents.table)),
    );
  }

  return { root, refresh, render, wants: (change) => change.kind === 'ended' || change.kind.startsWith('storage'), close() {} };
}

function metric(label, value, tone = '') {
  const shown = typeof value === 'number' ? count(value) : value;
  return h(
    'div',
    { class: `metric${tone ? ` tone-${tone}` : ''}`, 'data-metric': label },
    h('span', { class: 'metric-value' }, shown),
    h('span', { class: 'metric-label' }, label),
  );
}
