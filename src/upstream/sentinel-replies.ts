/**
 * What Redis Sentinel says, read: its answers about a master and the events it publishes.
 * Pure functions, so they are tested on their own (spec/sentinel.spec.ts).
 */
import type { HostPort } from "../config.js";
import type { RespValue } from "../resp/values.js";

function text(v: RespValue | undefined): string {
  return Buffer.isBuffer(v) ? v.toString() : typeof v === "string" || typeof v === "number" ? String(v) : "";
}

/** A host and a port as Sentinel writes them, or null when either is not one. */
function hostPort(host: string, portText: string): HostPort | null {
  const port = Number(portText);
  if (host === "" || !Number.isInteger(port) || port < 1 || port > 65535) return null;
  return { host, port };
}

/**
 * The value of `field` in a flat field/value list (SENTINEL MASTER's reply, an entry of
 * SENTINEL SENTINELS'), as text; undefined when it is not there.
 */
function fieldOf(list: RespValue, field: string): string | undefined {
  if (!Array.isArray(list)) return undefined;
  for (let i = 0; i + 1 < list.length; i += 2) if (text(list[i]) === field) return text(list[i + 1]);
  return undefined;
}

/** SENTINEL GET-MASTER-ADDR-BY-NAME's reply: [ip, port], or null when the sentinel knows no such master. */
export function parseMasterAddress(reply: RespValue): HostPort | null {
  if (!Array.isArray(reply) || reply.length < 2) return null;
  return hostPort(text(reply[0]), text(reply[1]));
}

/**
 * The config-epoch field of SENTINEL MASTER's reply (a flat field, value list in RESP2, a
 * map in RESP3): it grows with each failover, so the highest one names the newest master.
 * 0 when absent (an error reply, an unknown name).
 */
export function configEpochOf(reply: RespValue): number {
  const epoch = Number(fieldOf(reply, "config-epoch") ?? 0);
  return Number.isFinite(epoch) ? epoch : 0;
}

/** ROLE's first element: "master", "slave" or "sentinel"; "" when the reply is something else. */
export function roleOf(reply: RespValue): string {
  return Array.isArray(reply) ? text(reply[0]) : "";
}

/** A sentinel event about one master, as published on the sentinel's own pub/sub. */
export interface SentinelEvent {
  /** The channel: "+switch-master", "+selected-slave", "-failover-abort-no-good-slave", ... */
  kind: string;
  /** The name of the master the event is about. */
  master: string;
  /** host:port of that master as the event gives it (the old one for +switch-master). */
  masterId: string;
  /** +switch-master only: the new master. */
  to?: HostPort;
}

/**
 * Reads an event's message. Sentinel writes three shapes:
 * "+switch-master": `<name> <old-ip> <old-port> <new-ip> <new-port>`;
 * about a master: `master <name> <ip> <port> [...]`;
 * about a replica or sentinel: `slave <ip:port> <ip> <port> @ <master-name> <master-ip> <master-port>`.
 */
export function parseSentinelEvent(channel: string, message: string): SentinelEvent | null {
  const parts = message.trim().split(/\s+/);
  if (channel === "+switch-master") {
    if (parts.length < 5) return null;
    const port = Number(parts[4]);
    if (!Number.isInteger(port)) return null;
    return {
      kind: channel,
      master: parts[0],
      masterId: `${parts[1]}:${parts[2]}`,
      to: { host: parts[3], port },
    };
  }
  const at = parts.indexOf("@");
  if (at >= 0 && parts.length >= at + 4) {
    return { kind: channel, master: parts[at + 1], masterId: `${parts[at + 2]}:${parts[at + 3]}` };
  }
  if (parts[0] === "master" && parts.length >= 4) {
    return { kind: channel, master: parts[1], masterId: `${parts[2]}:${parts[3]}` };
  }
  return null;
}

/** What SENTINEL MASTER says of the master besides its epoch. */
export interface MasterState {
  /** Its down-after-milliseconds: how long a master may not answer before it counts as down. */
  downAfterMs: number;
  /** A failover of it is under way on this sentinel (flags: failover_in_progress). */
  failingOver: boolean;
}

/** The fields of SENTINEL MASTER's reply (a flat field/value list in RESP2) the proxy reads. */
export function masterStateOf(reply: RespValue): MasterState {
  return {
    downAfterMs: Number(fieldOf(reply, "down-after-milliseconds") ?? 0) || 0,
    failingOver: (fieldOf(reply, "flags") ?? "").split(",").includes("failover_in_progress"),
  };
}

/** The other sentinels a sentinel knows for a master (SENTINEL SENTINELS: a list of field/value lists). */
export function peersOf(reply: RespValue): HostPort[] {
  if (!Array.isArray(reply)) return [];
  const peers: HostPort[] = [];
  for (const entry of reply) {
    const peer = hostPort(fieldOf(entry, "ip") ?? "", fieldOf(entry, "port") ?? "");
    if (peer !== null) peers.push(peer);
  }
  return peers;
}

/** One sentinel's answer about the master. */
export type SentinelAnswer =
  | ({ sentinel: string; address: HostPort; epoch: number } & Partial<MasterState>)
  /** The sentinel answered but monitors no master of that name. */
  | { sentinel: string; address: null }
  | { sentinel: string; error: string };

/**
 * The addresses the sentinels named, most credible first: highest config epoch (the newest
 * failover), then the order the sentinels were listed in; each address once. An answer older
 * than `minEpoch` (a sentinel that has not heard of a failover the proxy already followed) is
 * left out, so a lagging sentinel cannot send the proxy back to the old master.
 */
export function rankAnswers(
  answers: readonly SentinelAnswer[],
  minEpoch: number,
): { address: HostPort; epoch: number }[] {
  const named: { address: HostPort; epoch: number }[] = [];
  for (const answer of answers) {
    if (!("address" in answer) || answer.address === null || answer.epoch < minEpoch) continue;
    named.push({ address: answer.address, epoch: answer.epoch });
  }
  named.sort((a, b) => b.epoch - a.epoch);
  const seen = new Set<string>();
  return named.filter(({ address }) => {
    const id = `${address.host}:${address.port}`;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

/** The answers as one line for a log or an error: "127.0.0.1:26379: ERR ...; 127.0.0.1:26380: no master 'x'". */
export function describeAnswers(answers: readonly SentinelAnswer[], name: string): string {
  return answers
    .map((a) =>
      "error" in a
        ? `${a.sentinel}: ${a.error}`
        : a.address === null
          ? `${a.sentinel}: knows no master '${name}'`
          : `${a.sentinel}: ${a.address.host}:${a.address.port} (epoch ${a.epoch})`,
    )
    .join("; ");
}
