// Connections: chat channels (state, generation, reconnects, zombies, heartbeat round trip,
// last frame received, last error, outbox) and tool servers (state, generation, reconnects, tools, last error).

import { getJSON } from './api.js';
import { badge, emptyRow, fill, h, panel, table } from './dom.js';
import { count, duration, syncClock } from './format.js';

const CHANNEL_COLUMNS = [
  'Channel',
  'Type',
  'Agent',
  'State',
  ['Gen', 'num'],
  ['Reconnects', 'num'],
  ['Zombies', 'num'],
  ['RTT', 'num'],
  ['Last frame', 'num'],
  ['Sent', 'num'],
  ['Failed', 'num'],
  ['Retries', 'num'],
  'Last error',
];
const SERVER_COLUMNS = ['Tool server', 'State', ['Gen', 'num'], ['Reconnects', 'num'], ['Tools', 'num'], 'Last error'];

export function connectionsView() {
  let answer = null;
  const channels = table(CHANNEL_COLUMNS, { 'data-testid': 'channels-table' });
  const servers = table(SERVER_COLUMNS, { 'data-testid': 'tool-servers-table' });
  const root = h(
    'div',
    { class: 'view connections-view', 'data-testid': 'connections-view' },
    panel('Chat channels', h('div', { class: 'table-wrap' }, channels.table)),
    panel('Tool servers (MCP)', h('div', { class: 'table-wrap' }, servers.table)),
  );

  async function refresh() {
    answer = await getJSON('/console/api/connections');
    syncClock(answer.at);
    render();
  }

  function render() {
    if (!answer) return;
    fill(
      channels.body,
      answer.channels.length
        ? answer.channels.map((c) =>
            h(
              'tr',
              { 'data-testid': 'channel-row', 'data-channel-id': c.id, 'data-state': c.state },
              h('td', { class: 'mono' }, c.id),
              h('td', {}, c.type),
              h('td', {}, c.agentId),
              h('td', {}, connectionState(c)),
              h('td', { class: 'num' }, c.generation),
              h('td', { class: 'num' }, count(c.reconnects)),
              h('td', { class: `num${c.zombies ? ' warn-text' : ''}` }, count(c.zombies)),
              h('td', { class: 'num' }, c.heartbeatRttS === null ? '–' : `${(c.heartbeatRttS * 1000).toFixed(0)} ms`),
              h(
                'td',
                { class: 'num', 'data-testid': 'last-frame' },
                c.lastFrameAgoS === null || c.lastFrameAgoS === undefined ? '–' : `${duration(c.lastFrameAgoS)} ago`,
              ),
              h('td', { class: 'num' }, count(c.sent)),
              h('td', { class: `num${c.failed ? ' bad-text' : ''}` }, count(c.failed)),
              h('td', { class: 'num' }, count(c.retries)),
              h('td', { class: 'clip', title: c.lastError ?? '' }, c.lastError ?? '–'),
            ),
          )
        : emptyRow(CHANNEL_COLUMNS.length, 'No chat channels configured.'),
    );
    fill(
      servers.body,
      answer.toolServers.length
        ? answer.toolServers.map((s) =>
            h(
              'tr',
              { 'data-testid': 'tool-server-row', 'data-server': s.name, 'data-state': s.state },
              h('td', { class: 'mono' }, s.name),
              h('td', {}, connectionState(s)),
              h('td', { class: 'num' }, s.generation),
              h('td', { class: 'num' }, count(s.reconnects)),
              h('td', { class: 'num' }, count(s.tools)),
              h('td', { class: 'clip', title: s.lastError ?? '' }, s.lastError ?? '–'),
            ),
          )
        : emptyRow(SERVER_COLUMNS.length, 'No tool servers configured.'),
    );
  }

  return { root, refresh, render, wants: () => false, close() {} };
}

function connectionState(c) {
  const tone = c.stopped ? 'failed' : c.state === 'ready' ? 'replied' : 'queued';
  const next = c.nextAttemptInS !== null && c.nextAttemptInS !== undefined ? ` · retry in ${duration(c.nextAttemptInS)}` : '';
  return [badge(c.stopped ? 'stopped' : c.state, `state-${tone}`), next ? h('span', { class: 'faint' }, next) : null];
}
