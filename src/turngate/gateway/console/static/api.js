// The console's calls to its gateway: JSON in and out, errors as {error: {code, message}},
// and POSTs whose answer is a stream of server-sent events (the chat pane).

/** A refusal from the gateway, with its stable code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onSignedOut = () => window.location.reload();

/** What to do when the gateway says the console is not signed in (any 401). */
export function whenSignedOut(handler) {
  onSignedOut = handler;
}

async function refusal(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const error = body?.error ?? {};
  if (response.status === 401) onSignedOut();
  return new ApiError(
    response.status,
    error.code ?? `http_${response.status}`,
    error.message ?? `${response.status} ${response.statusText}`,
  );
}

async function call(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await refusal(response);
  return response.json();
}

/** GET a JSON answer. */
export function getJSON(path) {
  return call('GET', path);
}

/** POST (a JSON body, or none) and read the JSON answer. */
export function postJSON(path, body) {
  return call('POST', path, body);
}

/** The path of one session's API, its key escaped. */
export function sessionPath(key, rest = '') {
  return `/console/api/sessions/${encodeURIComponent(key)}${rest}`;
}

/**
 * POST a JSON body and read the answer's server-sent events as they come:
 * onEvent(name, data) for each; resolves when the stream ends. A refusal before the stream
 * (a bad message, say) rejects with an ApiError.
 */
export async function streamPost(path, body, onEvent, signal) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
    body: JSON.stringify(body),
    cache: 'no-store',
    signal,
  });
  if (!response.ok) throw await refusal(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
    let end;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const parsed = parseEvent(block);
      if (parsed) onEvent(parsed.name, parsed.data);
    }
  }
}

/** One event block: its name and its JSON data (null for a comment, a keep-alive). */
function parseEvent(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') name = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return null;
  return { name, data: JSON.parse(data.join('\n')) };
}
