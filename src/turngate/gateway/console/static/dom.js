// A few helpers to build the DOM: no framework, no innerHTML (every text is set as text).

/** An element: h('td', {class: 'num', 'data-testid': 'x', onclick: fn}, child, ...). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

/** Append children (nodes, strings, numbers, nested arrays; null and false skipped). */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace every child of el. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A small coloured label: badge('running', 'state-running'). */
export function badge(text, cls = '', props = {}) {
  return h('span', { class: `badge ${cls}`.trim(), ...props }, text);
}

/** A key/value list for the cards: facts([['Version', '0.1.0'], ...]). */
export function facts(rows, props = {}) {
  return h(
    'dl',
    { class: 'facts', ...props },
    rows
      .filter((row) => row)
      .map(([label, value, valueProps]) => [h('dt', {}, label), h('dd', valueProps ?? {}, value ?? '–')]),
  );
}

/** A panel with a heading row (title, then any controls) and a body. */
export function panel(title, body, { controls = [], cls = '', props = {} } = {}) {
  return h(
    'section',
    { class: `panel ${cls}`.trim(), ...props },
    h('div', { class: 'panel-head' }, h('h2', {}, title), h('div', { class: 'panel-controls' }, controls)),
    body,
  );
}

/** A table with a header row; returns {table, body}. */
export function table(headings, props = {}) {
  const body = h('tbody');
  const head = h(
    'thead',
    {},
    h(
      'tr',
      {},
      headings.map((heading) =>
        Array.isArray(heading) ? h('th', { class: heading[1] }, heading[0]) : h('th', {}, heading),
      ),
    ),
  );
  const tableEl = h('table', { class: 'grid', ...props }, head, body);
  return { table: tableEl, body };
}

/** A row spanning the whole table, for "nothing here". */
export function emptyRow(columns, text) {
  return h('tr', { class: 'empty-row' }, h('td', { colspan: columns }, text));
}
