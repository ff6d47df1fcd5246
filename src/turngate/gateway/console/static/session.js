// One session's page: its state and run (live), the Abort and Unstick buttons, its turns
// (outcome, timings, attempts, lane, usage), its transcript with tool calls and results,
// the chat pane, and its own slice of the coordination log.

import { ApiError, getJSON, postJSON, sessionPath } from './api.js';
import { confirmAction, toast } from './dialog.js';
import { badge, emptyRow, facts, fill, h, panel, table } from './dom.js';
import { clock, count, duration, fullTime, shortId, syncClock } from './format.js';
import { liveRun, stateOf } from './liveness.js';
import { ChatPane } from './chat.js';
import { stepAndTools } from './sessions.js';
import { TranscriptView } from './transcript.js';

const TURN_COLUMNS = [
  ['#', 'num'],
  'Turn',
  'Outcome',
  'Lane',
  'Mode',
  'Accepted',
  ['Wait', 'num'],
  ['Run', 'num'],
  ['Restarts', 'num'],
  ['Epoch', 'num'],
  ['Tokens', 'num'],
];

export function sessionView(ctx, key) {
  let answer = null;
  const expanded = new Set();
  const title = h('h1', { class: 'mono session-title' }, key);
  const stateBadges = h('span', { class: 'state-badges', 'data-testid': 'session-state' });
  const abortButton = h(
    'button',
    { type: 'button', class: 'danger', 'data-testid': 'abort-button', onclick: () => act('abort') },
    'Abort run',
  );
  const unstickButton = h(
    'button',
    { type: 'button', class: 'danger ghost', 'data-testid': 'unstick-button', onclick: () => act('unstick') },
    'Unstick',
  );
  const runCard = h('div', { class: 'run-card', 'data-testid': 'run-card' });
  const { table: turnsTable, body: turnsBody } = table(TURN_COLUMNS, { 'data-testid': 'turns-table' });
  const transcript = new TranscriptView();
  const chat = new ChatPane(key, () => ctx.refreshSoon());
  const log = ctx.activity.view(key);
  const root = h(
    'div',
    { class: 'view session-view', 'data-testid': 'session-page', 'data-session-key': key },
    h(
      'div',
      { class: 'session-head' },
      h('a', { href: '#/sessions', class: 'back' }, '← Sessions'),
      title,
      stateBadges,
      h('span', { class: 'spacer' }),
      abortButton,
      unstickButton,
    ),
    runCard,
    h(
      'div',
      { class: 'split session-split' },
      panel('Transcript', [transcript.element, chat.element], { cls: 'transcript-panel' }),
      h(
        'div',
        { class: 'stack' },
        panel('Turns', h('div', { class: 'table-wrap' }, turnsTable), { cls: 'turns-panel' }),
        panel('Coordination, live', log.element, { cls: 'activity-panel' }),
      ),
    ),
  );

  async function refresh() {
    answer = await getJSON(sessionPath(key));
    syncClock(answer.at);
    chat.setDefaultMode(answer.agent?.queueMode);
    transcript.update(answer.transcript);
    renderTurns();
    render();
  }

  function render() {
    if (!answer) return;
    const session = answer.session;
    const run = liveRun(session, answer.at);
    const { state, flags } = stateOf(session, run);
    root.dataset.state = state;
    fill(stateBadges, badge(state, `state-${state}`), flags.map((flag) => badge(flag, `flag-${flag}`)));
    const idle = state === 'idle';
    abortButton.disabled = idle;
    unstickButton.disabled = idle;
    abortButton.title = idle ? 'Nothing runs in this session' : 'Abort the running turn (user_abort)';
    unstickButton.title = idle
      ? 'Nothing holds this session'
      : 'Force the session free now: the run is cancelled and fenced at once, without grace';
    renderRun(session, run, flags);
  }

  function renderRun(session, run, flags) {
    runCard.className = `run-card ${run ? 'has-run' : 'no-run'} ${flags.map((f) => `row-${f}`).join(' ')}`;
    if (!run) {
      fill(
        runCard,
        facts([
          ['State', session.state === 'queued' ? `${session.queued} turn(s) waiting` : 'idle: no run holds the session'],
          ['Lease epoch', `e${session.epoch}`],
          ['Turns', `${count(session.turnsTotal)} (${count(session.turnsOpen)} open)`],
          ['Last activity', clock(session.lastActivityAt), { title: fullTime(session.lastActivityAt) }],
          answer.agent ? ['Agent', `${answer.agent.id} · ${answer.agent.model} · ${answer.agent.queueMode}`] : null,
        ]),
      );
      return;
    }
    const progress = Math.min(1, run.sinceProgressS / run.stallTimeoutS);
    const bar = h('span', { class: `meter-fill${run.stalled ? ' bad' : progress >= 0.25 ? ' warn' : ''}` });
    bar.style.width = `${(progress * 100).toFixed(1)}%`;
    const ageFill = h('span', { class: `meter-fill${run.slow ? ' warn' : ''}` });
    ageFill.style.width = `${(Math.min(1, run.ageS / run.runTimeoutS) * 100).toFixed(1)}%`;
    fill(
      runCard,
      facts([
        ['Run', h('span', { class: 'mono', title: run.runId }, shortId(run.runId, 16)), { 'data-testid': 'run-id' }],
        [
          'Turns',
          run.turns.length
            ? run.turns.map((t) => h('span', { class: 'mono chip', title: `${t.runId} · lane ${t.lane} · restarts ${t.attempts}` }, shortId(t.runId)))
            : '–',
        ],
        ['Turn age', duration(run.turnAgeS)],
        ['Lease', `epoch ${run.epoch} · ${run.leaseState} · ${duration(run.ageS)}`],
        ['Since progress', h('span', { class: 'meter' }, bar, h('span', { class: 'meter-text' }, `${duration(run.sinceProgressS)} / stall ${duration(run.stallTimeoutS)}`))],
        ['Run age', h('span', { class: 'meter' }, ageFill, h('span', { class: 'meter-text' }, `${duration(run.ageS)} / timeout ${duration(run.runTimeoutS)}`))],
        ['Doing', stepAndTools(run)],
        ['Queued behind', session.queued ? `${session.queued} turn(s)` : 'nothing'],
      ]),
    );
  }

  function renderTurns() {
    if (!answer.turns.length) {
      fill(turnsBody, emptyRow(TURN_COLUMNS.length, 'No turns yet.'));
      return;
    }
    const rows = [];
    for (const turn of [...answer.turns].reverse()) {
      rows.push(turnRow(turn));
      if (expanded.has(turn.runId)) rows.push(turnDetail(turn));
    }
    fill(turnsBody, rows);
  }

  function turnRow(turn) {
    const tone = turn.state === 'replied' ? 'replied' : turn.state;
    return h(
      'tr',
      {
        class: `turn-row row-${turn.state}${expanded.has(turn.runId) ? ' open' : ''}`,
        'data-turn-state': turn.state,
        'data-turn-id': turn.runId,
        'data-testid': 'turn-row',
        title: 'Show the message, reply and error',
        onclick: () => {
          if (expanded.has(turn.runId)) expanded.delete(turn.runId);
          else expanded.add(turn.runId);
          renderTurns();
        },
      },
      h('td', { class: 'num faint' }, turn.seq),
      h('td', { class: 'mono', title: turn.runId }, shortId(turn.runId, 8)),
      h('td', {}, badge(turn.state, `state-${tone}`), turn.error ? h('span', { class: 'mono faint' }, ` ${turn.error.code}`) : null),
      h('td', {}, turn.lane),
      h('td', {}, turn.queueMode),
      h('td', { title: fullTime(turn.acceptedAt) }, clock(turn.acceptedAt)),
      h('td', { class: 'num' }, turn.waitS === null ? '–' : duration(turn.waitS)),
      h('td', { class: 'num' }, turn.runS === null ? '–' : duration(turn.runS)),
      h('td', { class: 'num', title: 'times the turn was resumed after a gateway restart' }, turn.attempts),
      h('td', { class: 'num' }, turn.epoch ?? '–'),
      h('td', { class: 'num' }, turn.usage ? `${turn.usage.promptTokens}+${turn.usage.completionTokens}` : '–'),
    );
  }

  function turnDetail(turn) {
    return h(
      'tr',
      { class: 'turn-detail', 'data-testid': 'turn-detail' },
      h(
        'td',
        { colspan: TURN_COLUMNS.length },
        facts([
          ['Turn id', h('span', { class: 'mono' }, turn.runId)],
          turn.servedBy && turn.servedBy !== turn.runId ? ['Served by run', h('span', { class: 'mono' }, turn.servedBy)] : null,
          ['Message', h('div', { class: 'entry-text' }, turn.message)],
          turn.reply !== undefined ? ['Reply', h('div', { class: 'entry-text' }, turn.reply)] : null,
          turn.error ? ['Error', h('span', { class: 'bad-text' }, `${turn.error.code}: ${turn.error.message}`)] : null,
          ['Accepted', fullTime(turn.acceptedAt)],
          ['Started', fullTime(turn.startedAt) || '–'],
          ['Ended', fullTime(turn.endedAt) || '–'],
          ['Deadline', `${duration(turn.timeoutS)} after acceptance`],
          turn.delivery ? ['Delivery', turn.delivery] : null,
        ]),
      ),
    );
  }

  async function act(action) {
    const ask =
      action === 'abort'
        ? {
            title: 'Abort the running turn?',
            body: `The run of ${key} is cancelled; its turn ends aborted (user_abort). Turns queued behind it run next.`,
            confirm: 'Abort run',
          }
        : {
            title: 'Force this session free?',
            body: `The run of ${key} is cancelled and fenced at once, without grace: its turns end aborted and anything it writes later is refused. Use it when a run does not end on abort.`,
            confirm: 'Unstick',
          };
    if (!(await confirmAction(ask))) return;
    try {
      const done = await postJSON(sessionPath(key, `/${action}`));
      const ended = done.runIds.length;
      toast(ended ? `${action === 'abort' ? 'Aborted' : 'Unstuck'}: ${ended} turn(s) ended` : 'Nothing was running.', 'ok');
    } catch (error) {
      toast(error instanceof ApiError ? `${error.code}: ${error.message}` : String(error), 'error');
    }
    ctx.refreshSoon();
  }

  return {
    root,
    refresh,
    render,
    wants: (change) => change.sessionKey === key,
    close: () => log.close(),
  };
}
