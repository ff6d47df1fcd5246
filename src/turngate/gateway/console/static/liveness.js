// A running session's figures aged to now: the answer said how old things were at `at`;
// between answers the page adds the time since, and tells stalled and slow the way the
// gateway does (LeaseView.stalled / .slow), so a run that stops progressing turns amber
// without another request.

import { serverNow, sinceAnswer } from './format.js';

/** The run of a session row (or null), with ages as of now. */
export function liveRun(session, at) {
  const run = session.run;
  if (!run) return null;
  const since = sinceAnswer(at);
  const ageS = run.ageS + since;
  const sinceProgressS = run.sinceProgressS + since;
  return {
    ...run,
    ageS,
    sinceProgressS,
    // The turn's age counts from its acceptance: its wait in the queue, then its run.
    turnAgeS: run.acceptedAt === null ? ageS : Math.max(ageS, serverNow() - run.acceptedAt),
    tools: run.tools.map((tool) => ({ ...tool, forS: tool.forS + since })),
    stalled: run.leaseState !== 'held' || sinceProgressS >= run.stallTimeoutS / 2,
    slow: ageS >= run.runTimeoutS / 2,
  };
}

/** The CSS classes and words of a session's state. */
export function stateOf(session, run) {
  if (session.waitingForStorage) return { state: session.state, flags: ['storage'] };
  const flags = [];
  if (run?.stalled) flags.push(run.leaseState !== 'held' ? 'cancelling' : 'stalled');
  if (run?.slow) flags.push('slow');
  return { state: session.state, flags };
}
