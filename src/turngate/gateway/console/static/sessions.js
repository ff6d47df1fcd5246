// The sessions view: every session's state at a glance (running, queued, idle; stalled and
// slow highlighted), its queue, its run (age, lease, progress, step, tools), and beside it
// the coordination log.

import { getJSON } from './api.js';
import { badge, emptyRow, fill, h, panel, table } from './dom.js';
import { ago, count, duration, fullTime, shortId, syncClock } from './format.js';
import { liveRun, stateOf } from './liveness.js';

const ORDER = { running: 0, queued: 1, idle: 2 };
const COLUMNS = [
  ['', 'dot-col'],
  'Session',
  'State',
  ['Queue', 'num'],
  'Run',
  ['Turn age', 'num'],
  'Lease',
  ['Since progress', 'num'],
  'Step · tools',
  ['Turns', 'num'],
  'Last activity',
];

export function sessionsView(ctx) {
  let answer = null;
  const tiles = h('div', { class: 'tiles', 'data-testid': 'sessions-summary' });
  const filter = h('input', {
    type: 'search',
    class: 'filter',
    placeholder: 'Filter sessions',
    'aria-label': 'Filter sessions',
    'data-testid': 'sessions-filter',
    oninput: () => render(),
  });
  const openKey = h('input', {
    type: 'text',
    class: 'mono',
    placeholder: 'agent:main:…',
    'aria-label': 'Session key to open',
    spellcheck: 'false',
    'data-testid': 'open-session-input',
  });
  const openForm = h(
    'form',
    {
      class: 'inline-form',
      onsubmit: (event) => {
        event.preventDefault();
        const key = openKey.value.trim();
        if (key) ctx.navigate(`#/session/${encodeURIComponent(key)}`);
      },
    },
    openKey,
    h('button', { type: 'submit', class: 'small', 'data-testid': 'open-session-submit' }, 'Open'),
  );
  const { table: grid, body } = table(COLUMNS, { 'data-testid': 'sessions-table' });
  const log = ctx.activity.view();
  const root = h(
    'div',
    { class: 'view sessions-view', 'data-testid': 'sessions-view' },
    tiles,
    h(
      'div',
      { class: 'split' },
      panel('Sessions', h('div', { class: 'table-wrap' }, grid), { controls: [filter, openForm] }),
      panel('Coordination, live', log.element, { cls: 'activity-panel' }),
    ),
  );

  async function refresh() {
    answer = await getJSON('/console/api/sessions');
    syncClock(answer.at);
    render();
  }

  function render() {
    if (!answer) return;
    const rows = answer.sessions.map((session) => ({ session, run: liveRun(session, answer.at) }));
    renderTiles(rows);
    const needle = filter.value.trim().toLowerCase();
    const shown = rows
      .filter(({ session }) => !needle || session.key.toLowerCase().includes(needle))
      .sort(byAttention);
    if (!shown.length) {
      fill(body, emptyRow(COLUMNS.length, needle ? 'No session matches.' : 'No sessions yet. Send a message to start one.'));
      return;
    }
    fill(body, shown.map(({ session, run }) => row(session, run)));
  }

  function renderTiles(rows) {
    const running = rows.filter((r) => r.session.state === 'running').length;
    const queuedTurns = rows.reduce((sum, r) => sum + r.session.queued, 0);
    const stalled = rows.filter((r) => r.run?.stalled).length;
    const slow = rows.filter((r) => r.run?.slow).length;
    const storage = rows.filter((r) => r.session.waitingForStorage).length;
    const oldest = Math.max(0, ...rows.map((r) => r.run?.ageS ?? 0));
    fill(
      tiles,
      tile('Running', count(running), running ? 'run' : '', 'tile-running'),
      tile('Queued turns', count(queuedTurns), queuedTurns ? 'queue' : '', 'tile-queued'),
      tile('Stalled', count(stalled), stalled ? 'bad' : '', 'tile-stalled'),
      tile('Slow', count(slow), slow ? 'warn' : '', 'tile-slow'),
      tile('Oldest lease', running ? duration(oldest) : '–', '', 'tile-oldest'),
      tile('Sessions', count(answer.total ?? rows.length), '', 'tile-sessions'),
      storage ? tile('Waiting for storage', count(storage), 'bad', 'tile-storage') : null,
    );
  }

  function row(session, run) {
    const { state, flags } = stateOf(session, run);
    const href = `#/session/${encodeURIComponent(session.key)}`;
    const classes = ['session-row', `row-${state}`, ...flags.map((f) => `row-${f}`)];
    const runTurn = run?.turns?.[0];
    return h(
      'tr',
      {
        class: classes.join(' '),
        'data-session-key': session.key,
        'data-state': state,
        'data-stalled': run?.stalled ? 'true' : 'false',
        'data-slow': run?.slow ? 'true' : 'false',
        'data-testid': 'session-row',
        onclick: (event) => {
          if (!event.target.closest('a')) ctx.navigate(href);
        },
      },
      h('td', { class: 'dot-col' }, h('span', { class: `dot dot-${state}`, title: state })),
      h('td', { class: 'key' }, h('a', { class: 'mono', href }, session.key)),
      h('td', { class: 'wrap' }, badge(state, `state-${state}`), flags.map((flag) => badge(flag, `flag-${flag}`))),
      h('td', { class: 'num' }, session.queued ? count(session.queued) : '–'),
      h(
        'td',
        { class: 'mono wrap', title: run ? `run ${run.runId}` : '' },
        run ? [shortId(run.runId), runTurn && runTurn.lane !== 'direct' ? badge(runTurn.lane, 'lane') : null] : '–',
      ),
      h('td', { class: 'num' }, run ? duration(run.turnAgeS) : '–'),
      h('td', { class: 'mono' }, run ? `e${run.epoch} · ${duration(run.ageS)}` : `e${session.epoch}`),
      h(
        'td',
        { class: `num${run?.stalled ? ' bad-text' : ''}`, title: run ? `stall timeout ${duration(run.stallTimeoutS)}` : '' },
        run ? duration(run.sinceProgressS) : '–',
      ),
      h('td', {}, run ? stepAndTools(run) : '–'),
      h('td', { class: 'num', title: `${session.turnsOpen} open` }, count(session.turnsTotal)),
      h('td', { title: fullTime(session.lastActivityAt) }, ago(session.lastActivityAt)),
    );
  }

  return {
    root,
    refresh,
    render,
    wants: () => true,
    close: () => log.close(),
  };
}

/** Stalled first, then running, queued, idle; most recent activity first within each. */
function byAttention(a, b) {
  const stalled = Number(Boolean(b.run?.stalled)) - Number(Boolean(a.run?.stalled));
  if (stalled) return stalled;
  const state = ORDER[a.session.state] - ORDER[b.session.state];
  if (state) return state;
  return (b.session.lastActivityAt ?? 0) - (a.session.lastActivityAt ?? 0);
}

function tile(label, value, tone, testid) {
  return h(
    'div',
    { class: `tile${tone ? ` tone-${tone}` : ''}`, 'data-testid': testid },
    h('span', { class: 'tile-value' }, value),
    h('span', { class: 'tile-label' }, label),
  );
}

/** "step 2 · weather 1.2s": the model step, and each tool under way with its time. */
export function stepAndTools(run) {
  const tools = run.tools.map((tool) => h('span', { class: 'tool-chip mono' }, `${tool.name} ${duration(tool.forS)}`));
  return [h('span', { class: 'step' }, `step ${run.step}`), tools];
}
