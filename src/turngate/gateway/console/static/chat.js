// The chat pane: send a message to the session and watch its turn: accepted, the reply as
// it streams, each tool call as it begins and returns, then the outcome.

import { ApiError, streamPost } from './api.js';
import { badge, fill, h } from './dom.js';
import { duration, shortId } from './format.js';

const MODES = ['followup', 'collect', 'interrupt', 'steer', 'reject'];
const KEPT_EXCHANGES = 4;

export class ChatPane {
  /** onEnded(): the turn ended (the page reads the session again). */
  constructor(sessionKey, onEnded) {
    this.sessionKey = sessionKey;
    this.onEnded = onEnded;
    this.replies = h('div', { class: 'chat-replies', 'data-testid': 'chat-reply', 'aria-live': 'polite' });
    this.input = h('textarea', {
      rows: 2,
      placeholder: `Message ${sessionKey} (Enter sends, Shift+Enter for a new line)`,
      'aria-label': 'Message',
      'data-testid': 'chat-input',
      onkeydown: (event) => {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.send();
        }
      },
    });
    this.mode = h(
      'select',
      {
        'aria-label': 'Queue mode',
        title: 'Queue mode: what happens when the session is busy',
        'data-testid': 'chat-mode',
        onchange: () => {
          this.modeTouched = true;
        },
      },
      MODES.map((mode) => h('option', { value: mode }, mode)),
    );
    this.button = h('button', { type: 'submit', class: 'primary', 'data-testid': 'chat-send' }, 'Send');
    const form = h(
      'form',
      {
        class: 'composer',
        onsubmit: (event) => {
          event.preventDefault();
          this.send();
        },
      },
      this.input,
      h('div', { class: 'composer-side' }, this.mode, this.button),
    );
    this.element = h('section', { class: 'chat', 'data-testid': 'chat' }, this.replies, form);
  }

  /** The agent's default queue mode becomes the pane's, unless the person chose one. */
  setDefaultMode(mode) {
    if (mode && !this.modeTouched) this.mode.value = mode;
  }

  async send() {
    const message = this.input.value;
    if (!message.trim()) return;
    this.input.value = '';
    const exchange = new Exchange(message, this.mode.value);
    this.replies.append(exchange.element);
    while (this.replies.children.length > KEPT_EXCHANGES) this.replies.firstElementChild.remove();
    try {
      await streamPost(
        '/console/api/chat',
        { sessionKey: this.sessionKey, message, queueMode: this.mode.value },
        (name, data) => exchange.on(name, data),
      );
      exchange.streamEnded();
    } catch (error) {
      exchange.failed(error instanceof ApiError ? `${error.code}: ${error.message}` : String(error));
    } finally {
      this.onEnded();
    }
  }
}

/** One message sent from this pane, and what became of it. */
class Exchange {
  constructor(message, mode) {
    this.status = badge('sending', 'state-queued', { 'data-testid': 'chat-status' });
    this.runId = h('span', { class: 'mono faint' });
    this.activity = h('div', { class: 'chat-activity' });
    this.text = h('div', { class: 'entry-text reply-text', 'data-testid': 'chat-reply-text' });
    this.streamed = '';
    this.element = h(
      'article',
      { class: 'exchange', 'data-state': 'sending', 'data-testid': 'chat-exchange' },
      h('div', { class: 'exchange-head' }, this.status, h('span', { class: 'faint' }, mode), this.runId),
      h('div', { class: 'exchange-message' }, message),
      this.activity,
      this.text,
    );
  }

  setState(state, tone = state) {
    this.element.dataset.state = state;
    this.status.textContent = state;
    this.status.className = `badge state-${tone}`;
  }

  on(name, data) {
    switch (name) {
      case 'accepted':
        this.element.dataset.runId = data.runId;
        this.runId.textContent = shortId(data.runId, 12);
        this.runId.title = data.runId;
        this.setState('streaming', 'running');
        break;
      case 'text':
        this.streamed += data.text;
        this.text.textContent = this.streamed;
        break;
      case 'tool':
        this.tool(data);
        break;
      case 'outcome':
        this.outcome(data);
        break;
      case 'error':
        this.failed(`${data.error.code}: ${data.error.message}`);
        break;
      default:
        break;
    }
  }

  tool(data) {
    const existing = this.activity.querySelector(`[data-call-id="${CSS.escape(data.id)}"]`);
    const line =
      existing ??
      h('div', { class: 'tool-line', 'data-call-id': data.id, 'data-testid': 'chat-tool', 'data-tool': data.name });
    line.dataset.phase = data.phase;
    if (data.phase === 'start') {
      fill(line, h('span', { class: 'spinner' }), h('span', { class: 'mono tool-name' }, data.name), h('span', { class: 'mono faint' }, data.arguments));
    } else {
      fill(
        line,
        badge(data.isError ? 'error' : 'ok', data.isError ? 'state-failed' : 'state-replied'),
        h('span', { class: 'mono tool-name' }, data.name),
        h('span', { class: 'faint' }, duration(data.durationS)),
        h('span', { class: 'mono tool-result' }, data.result),
      );
      line.classList.toggle('is-error', data.isError);
    }
    if (!existing) this.activity.append(line);
  }

  outcome(data) {
    this.done = true;
    if (data.reply !== undefined) this.text.textContent = data.reply;
    const merged = data.mergedInto ? ` (merged into ${shortId(data.mergedInto)})` : '';
    if (data.status === 'ok') {
      this.setState('replied');
    } else {
      this.setState(data.status, data.status === 'aborted' ? 'aborted' : 'failed');
      const error = data.error ? `${data.error.code}: ${data.error.message}` : data.status;
      this.activity.append(h('p', { class: 'form-error', 'data-testid': 'chat-error' }, error));
    }
    if (merged) this.activity.append(h('p', { class: 'faint' }, merged));
    if (data.usage) {
      this.element.querySelector('.exchange-head').append(
        h('span', { class: 'faint' }, `${data.usage.promptTokens} + ${data.usage.completionTokens} tokens`),
      );
    }
  }

  failed(message) {
    this.done = true;
    this.setState('error', 'failed');
    this.activity.append(h('p', { class: 'form-error', 'data-testid': 'chat-error' }, message));
  }

  streamEnded() {
    if (!this.done) this.failed('the stream ended before the turn did; see its row in Turns');
  }
}
