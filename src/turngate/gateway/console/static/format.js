// Times and durations. The gateway sends wall times (Unix seconds) and ages as of `at`, its
// wall time when it answered; serverNow() is the gateway's time now, so a page can age what
// it shows between answers.

let offsetS = 0;

/** Learn the gateway's clock from an answer's `at`. */
export function syncClock(at) {
  if (typeof at === 'number') offsetS = at - Date.now() / 1000;
}

/** The gateway's wall time now (seconds). */
export function serverNow() {
  return Date.now() / 1000 + offsetS;
}

/** Seconds since the answer that carried `at` (never negative). */
export function sinceAnswer(at) {
  return Math.max(0, serverNow() - at);
}

/** A duration: 0.4s, 3.4s, 42s, 4m 05s, 3h 07m, 2d 4h. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** How long ago a wall time was: "12s ago". */
export function ago(wall) {
  if (wall === null || wall === undefined) return '–';
  return `${duration(serverNow() - wall)} ago`;
}

/** How long until a wall time: "in 4m 05s" (or "due"). */
export function until(wall) {
  if (wall === null || wall === undefined) return '–';
  const left = wall - serverNow();
  return left <= 0 ? 'due' : `in ${duration(left)}`;
}

const pad = (n, width = 2) => String(n).padStart(width, '0');

/** A wall time as local clock time: 14:02:11, with the date when it is not today. */
export function clock(wall, { millis = false } = {}) {
  if (wall === null || wall === undefined) return '–';
  const d = new Date(wall * 1000);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const withMillis = millis ? `${time}.${pad(d.getMilliseconds(), 3)}` : time;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return withMillis;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${withMillis}`;
}

/** A wall time in full, for a tooltip: 2026-12-01 14:02:11 (local) · 13:02:11 UTC. */
export function fullTime(wall) {
  if (wall === null || wall === undefined) return '';
  const d = new Date(wall * 1000);
  return `${d.toLocaleString()} · ${d.toISOString().replace('T', ' ').slice(0, 19)} UTC`;
}

/** A whole number with thin grouping: 12 345. */
export function count(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString();
}

/** The first characters of an id, for dense tables (the whole id goes in the tooltip). */
export function shortId(id, length = 10) {
  if (!id) return '–';
  return id.length > length + 1 ? `${id.slice(0, length)}…` : id;
}

/** A JSON text, indented when it parses (tool arguments are kept as the model sent them). */
export function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
