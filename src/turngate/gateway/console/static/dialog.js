// Confirmation before an action that ends turns, and short notes of what an action did.

import { h } from './dom.js';

/** Ask before acting: resolves true when the person confirms. */
export function confirmAction({ title, body, confirm = 'Confirm' }) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-body').textContent = body;
  document.getElementById('confirm-ok').textContent = confirm;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
  });
}

/** A note at the corner of the page for a few seconds; kind 'error' stays until clicked. */
export function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  const note = h('div', { class: `toast toast-${kind}`, 'data-testid': 'toast', 'data-kind': kind }, text);
  note.addEventListener('click', () => note.remove());
  box.append(note);
  if (kind !== 'error') setTimeout(() => note.remove(), 5000);
  else setTimeout(() => note.remove(), 15000);
}
