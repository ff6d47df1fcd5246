// A session's transcript, typed: user messages, the assistant's text, its tool calls (with
// their arguments) and each call's result (errors marked). Entries never change once
// written, so new ones are appended and the reader's place is kept.

import { fill, h } from './dom.js';
import { clock, fullTime, prettyJson, shortId } from './format.js';

export class TranscriptView {
  constructor() {
    this.element = h('div', { class: 'transcript', 'data-testid': 'transcript' });
    this.lastSeq = null;
  }

  /** Show the entries of an answer (oldest first); only those not shown yet are added. */
  update(entries) {
    if (!entries.length && this.lastSeq === null) {
      fill(this.element, h('p', { class: 'empty', 'data-testid': 'transcript-empty' }, 'No transcript yet.'));
      return;
    }
    const fresh = entries.filter((entry) => this.lastSeq === null || entry.seq > this.lastSeq);
    if (!fresh.length) return;
    const atBottom = this.element.scrollHeight - this.element.scrollTop - this.element.clientHeight < 40;
    if (this.lastSeq === null) this.element.replaceChildren();
    for (const entry of fresh) this.element.append(entryElement(entry));
    this.lastSeq = fresh[fresh.length - 1].seq;
    if (atBottom || fresh.length === entries.length) this.element.scrollTop = this.element.scrollHeight;
  }
}

function entryElement(entry) {
  const meta = h(
    'div',
    { class: 'entry-meta' },
    h('span', { class: 'entry-who' }, WHO[entry.kind] ?? entry.kind),
    entry.kind === 'tool_result' ? h('span', { class: 'mono' }, entry.toolName) : null,
    entry.isError ? h('span', { class: 'badge state-failed' }, 'error') : null,
    h('span', { class: 'spacer' }),
    h('span', { class: 'mono faint', title: `run ${entry.runId} · epoch ${entry.epoch}` }, `${shortId(entry.runId, 8)} · e${entry.epoch}`),
    h('time', { title: fullTime(entry.at) }, clock(entry.at)),
  );
  return h(
    'article',
    {
      class: `entry kind-${entry.kind}${entry.isError ? ' is-error' : ''}`,
      'data-kind': entry.kind,
      'data-seq': entry.seq,
      'data-testid': 'transcript-entry',
    },
    meta,
    body(entry),
  );
}

const WHO = { user: 'user', assistant: 'assistant', tool_calls: 'tool calls', tool_result: 'tool result' };

function body(entry) {
  if (entry.kind === 'tool_calls') {
    return h(
      'div',
      { class: 'tool-calls' },
      entry.toolCalls.map((call) =>
        h(
          'details',
          // Short arguments are shown at once; long ones wait for a click.
          { class: 'tool-call', 'data-testid': 'tool-call', 'data-tool': call.name, open: call.arguments.length <= 400 },
          h('summary', {}, h('span', { class: 'tool-name mono' }, call.name), h('span', { class: 'faint mono' }, ` ${call.id}`)),
          h('pre', { class: 'code' }, prettyJson(call.arguments)),
        ),
      ),
    );
  }
  const text = entry.text ?? '';
  const cut = entry.textTruncated ? h('p', { class: 'faint' }, `… cut at ${text.length} of ${entry.textChars} characters`) : null;
  if (entry.kind === 'tool_result') {
    return h('div', {}, h('pre', { class: 'code', 'data-testid': 'tool-result' }, text), cut);
  }
  return h('div', {}, h('div', { class: 'entry-text' }, text), cut);
}
