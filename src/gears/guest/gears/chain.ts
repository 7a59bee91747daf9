/**
 * An execution's plan compiled into one chain of closures, a link per step: a record goes
 * through every step of every stage in one call, and a global step moves it to another
 * partition by switching the current one. What a step does once its input is complete
 * (emit groups, sort, count) becomes a phase that finish() runs in pipeline order.
 */
import { gatherLink } from "./gather-steps.js";
import { passLink } from "./pass-steps.js";
import { at } from "./state.js";
import { GLOBAL_OPS, STATELESS_OPS, type Exec, type Phase, type Push, type StepDef } from "./types.js";

export function compile(ex: Exec): void {
  const steps = ex.action.steps;
  const P = ex.parts;
  const stageOf: number[] = [];
  let stage = 0;
  for (const st of steps) {
    stageOf.push(stage);
    if (GLOBAL_OPS.includes(st.type)) stage++;
  }
  let statelessPrefix = 0;
  while (statelessPrefix < steps.length && STATELESS_OPS.includes(steps[statelessPrefix].type))
    statelessPrefix++;

  const flushers: Phase[][] = [];
  let next: Push = (r) => {
    ex.results[at.part as number].push(r);
    ex.recordsOut++;
  };
  for (let i = steps.length - 1; i >= 0; i--) {
    const st = steps[i];
    const phases: (() => void)[] = [];
    next = build(ex, st, next, P, phases, i < statelessPrefix);
    if (phases.length > 0) {
      const s = GLOBAL_OPS.includes(st.type) ? stageOf[i] + 1 : stageOf[i];
      flushers.push(phases.map((run) => ({ stage: s, where: st.where, run })));
    }
  }
  flushers.reverse();
  ex.head = next;
  ex.phases = ([] as Phase[]).concat(...flushers);
}

/** One step as a link of the chain; `phases` receives what it does once its input is complete. */
function build(
  ex: Exec,
  st: StepDef,
  next: Push,
  P: number,
  phases: (() => void)[],
  closable: boolean,
): Push {
  return passLink(ex, st, next, P, closable) ?? gatherLink(ex, st, next, P, phases);
}
