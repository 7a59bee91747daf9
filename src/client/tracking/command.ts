import { encodeInteger, OK } from "../../resp/encode.js";
import { RespMap, RespSet } from "../../resp/values.js";
import type { CommandHost } from "../command-host.js";
import { TrackingState } from "./state.js";

/** Redis' arity error for a CLIENT subcommand. */
function arity(sub: string): string {
  return `ERR wrong number of arguments for 'client|${sub}' command`;
}

/** Whether one of two prefixes begins the other (Redis' stringCheckPrefix). */
function overlaps(a: Buffer, b: Buffer): boolean {
  const n = Math.min(a.length, b.length);
  return a.subarray(0, n).equals(b.subarray(0, n));
}

/** Redis' refusal of prefixes that overlap the client's own or each other; null when fine. */
function prefixCollision(existing: readonly Buffer[], given: readonly Buffer[]): string | null {
  for (let i = 0; i < given.length; i++) {
    const clash = existing.find((p) => overlaps(p, given[i]));
    if (clash !== undefined) {
      return `ERR Prefix '${given[i].toString()}' overlaps with an existing prefix '${clash.toString()}'. Prefixes for a single client must not overlap.`;
    }
    for (let j = i + 1; j < given.length; j++) {
      if (overlaps(given[i], given[j])) {
        return `ERR Prefix '${given[i].toString()}' overlaps with another provided prefix '${given[j].toString()}'. Prefixes for a single client must not overlap.`;
      }
    }
  }
  return null;
}

/** Adds prefixes to a set kept sorted by bytes, each once. */
function mergePrefixes(old: readonly Buffer[], added: readonly Buffer[]): Buffer[] {
  const out = [...old];
  for (const p of added) if (!out.some((q) => q.equals(p))) out.push(p);
  return out.sort(Buffer.compare);
}

const NO_REDIRECT = "ERR The client ID you want redirect to does not exist";

/** What CLIENT TRACKING's arguments ask for, once checked; or why not. */
type TrackingPlan =
  | { error: string }
  /** The REDIRECT id would be another thread's client: ask there, then check on. */
  | { remote: number }
  | { off: true }
  | { state: TrackingState };

/**
 * Checks CLIENT TRACKING's arguments in Redis' order, with its error texts. `known` is a
 * REDIRECT id the other threads (--threads) already said is theirs: Redis looks its REDIRECT
 * client up as it meets the option, so a missing one is refused ahead of a later syntax error,
 * and the options after it are checked only once the other threads answered.
 */
function planTracking(session: CommandHost, argv: Buffer[], known: number): TrackingPlan {
  let redirect = 0;
  let bcast = false;
  let optin = false;
  let optout = false;
  let noloop = false;
  const prefixes: Buffer[] = [];
  for (let j = 3; j < argv.length; j++) {
    const option = argv[j].toString().toLowerCase();
    const more = j < argv.length - 1;
    if (option === "redirect" && more) {
      j++;
      if (redirect !== 0) return { error: "ERR A client can only redirect to a single other client" };
      const text = argv[j].toString();
      const id = Number(text);
      if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(id))
        return { error: "ERR value is not an integer or out of range" };
      if (id !== session.id && id !== known && session.ctx.clients.get(id) === undefined) {
        if (session.ctx.tracking.remote?.elsewhere(id) !== true) return { error: NO_REDIRECT };
        return { remote: id };
      }
      redirect = id;
    } else if (option === "bcast") bcast = true;
    else if (option === "optin") optin = true;
    else if (option === "optout") optout = true;
    else if (option === "noloop") noloop = true;
    else if (option === "prefix" && more) prefixes.push(argv[++j]);
    else return { error: "ERR syntax error" };
  }
  const mode = argv[2].toString().toLowerCase();
  const old = session.tracking;
  if (mode === "off") return { off: true };
  if (mode !== "on") return { error: "ERR syntax error" };
  if (!bcast && prefixes.length > 0) return { error: "ERR PREFIX option requires BCAST mode to be enabled" };
  if (old !== null && old.bcast !== bcast) {
    return {
      error:
        "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.",
    };
  }
  if (bcast && (optin || optout)) return { error: "ERR OPTIN and OPTOUT are not compatible with BCAST" };
  if (optin && optout) return { error: "ERR You can't specify both OPTIN mode and OPTOUT mode" };
  if ((optin && old?.optout === true) || (optout && old?.optin === true)) {
    return {
      error:
        "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.",
    };
  }
  let merged: Buffer[] = [];
  if (bcast) {
    const collision = prefixCollision(old?.prefixes ?? [], prefixes);
    if (collision !== null) return { error: collision };
    merged = mergePrefixes(old?.prefixes ?? [], prefixes.length > 0 ? prefixes : [Buffer.alloc(0)]);
  }
  return { state: new TrackingState(redirect, bcast, optin, optout, noloop, merged) };
}

function trackingOff(session: CommandHost): void {
  if (session.tracking !== null) session.ctx.tracking.disable(session.id, session.tracking);
  session.tracking = null;
}

/** Turns tracking on as `state` says; the OK once every node's invalidation stream is up. */
function trackingOn(session: CommandHost, state: TrackingState): Promise<Buffer> {
  const table = session.ctx.tracking;
  const old = session.tracking;
  // Redis keeps a CLIENT CACHING given before tracking is turned on again.
  state.caching = old?.caching ?? false;
  if (old !== null) table.disable(session.id, old);
  session.tracking = state;
  return table.enable(session.id, state).then(
    () => OK,
    (err: Error) => {
      // Without a stream the proxy would miss changes: tracking stays off.
      if (session.tracking === state) {
        table.disable(session.id, state);
        session.tracking = null;
      }
      throw new Error(`client tracking is unavailable: ${err.message}`);
    },
  );
}

/**
 * CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p]... [BCAST] [OPTIN] [OPTOUT] [NOLOOP]. The
 * OK waits until every node's invalidation stream is up, and the client's next commands wait
 * for it, so no change to a key it reads next can go unseen.
 */
export function clientTracking(session: CommandHost, argv: Buffer[]): void {
  if (argv.length < 3) return session.replyError(arity("tracking"));
  const plan = planTracking(session, argv, 0);
  if ("error" in plan) return session.replyError(plan.error);
  if ("off" in plan) {
    trackingOff(session);
    return void session.replyNow(OK);
  }
  if ("state" in plan) return session.replyLater(trackingOn(session, plan.state), true);
  // The client's next commands wait (hold) while the other threads are asked.
  const id = plan.remote;
  const found = session.ctx.threads?.clientList(["ID", String(id)]) ?? Promise.resolve("");
  session.replyLater(
    found.then((line) => {
      if (line === "") throw new Error(NO_REDIRECT.slice("ERR ".length));
      const checked = planTracking(session, argv, id);
      if ("error" in checked) throw new Error(checked.error.slice("ERR ".length));
      if ("remote" in checked) throw new Error("A client can only redirect to a single other client");
      if ("state" in checked) return trackingOn(session, checked.state);
      trackingOff(session);
      return OK;
    }),
    true,
  );
}

/** CLIENT CACHING YES|NO: the next command's keys are (OPTIN) or are not (OPTOUT) remembered. */
export function clientCaching(session: CommandHost, argv: Buffer[]): void {
  if (argv.length !== 3) return session.replyError(arity("caching"));
  const state = session.tracking;
  if (state === null) {
    return session.replyError(
      "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
    );
  }
  const answer = argv[2].toString().toLowerCase();
  if (answer === "yes") {
    if (!state.optin)
      return session.replyError(
        "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
      );
  } else if (answer === "no") {
    if (!state.optout)
      return session.replyError(
        "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
      );
  } else return session.replyError("ERR syntax error");
  state.caching = true;
  session.replyNow(OK);
}

/** CLIENT GETREDIR: the REDIRECT client, 0 for none, -1 when tracking is off. */
export function clientGetRedir(session: CommandHost, argv: Buffer[]): void {
  if (argv.length !== 2) return session.replyError(arity("getredir"));
  session.replyNow(encodeInteger(session.tracking?.redirect ?? -1));
}

/** CLIENT TRACKINGINFO: flags (a set), redirect and prefixes, as Redis builds the map. */
export function clientTrackingInfo(session: CommandHost, argv: Buffer[]): void {
  if (argv.length !== 2) return session.replyError(arity("trackinginfo"));
  const state = session.tracking;
  const flags: string[] = [state === null ? "off" : "on"];
  if (state !== null) {
    if (state.bcast) flags.push("bcast");
    if (state.optin) flags.push("optin");
    if (state.optin && state.caching) flags.push("caching-yes");
    if (state.optout) flags.push("optout");
    if (state.optout && state.caching) flags.push("caching-no");
    if (state.noloop) flags.push("noloop");
    if (state.brokenRedirect) flags.push("broken_redirect");
  }
  const text = (s: string): Buffer => Buffer.from(s);
  session.replyValue(
    new RespMap([
      [text("flags"), new RespSet(flags.map(text))],
      [text("redirect"), state?.redirect ?? -1],
      [text("prefixes"), state?.prefixes ?? []],
    ]),
  );
}
