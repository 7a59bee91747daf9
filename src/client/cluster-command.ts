import { createHash } from "node:crypto";
import { keySlot as calculateSlot } from "../routing/key-slot.js";
import { decodeReply } from "../resp/decode.js";
import { encodeBulk, encodeCommand, encodeError, encodeInteger, encodeValue, OK } from "../resp/encode.js";
import { RespMap } from "../resp/values.js";
import { hideProxyKeys, PROXY_KEYS_SLOT } from "../routing/hidden-keys.js";
import type { ReplySink } from "../routing/lease.js";
import { isLongLong, wrongArity, type CommandHost, type LocalCommand } from "./command-host.js";

/**
 * The node the proxy pretends to be: a stable id derived from its announced address. Unless
 * --announce-port says otherwise, the port is the one the client came in on, so that a TLS
 * client is sent to the TLS port and a plain one to the plain port.
 */
function self(session: CommandHost): { id: string; host: string; port: number } {
  const config = session.ctx.config;
  const host = config.announceHost ?? config.bind;
  const port = config.announcePort ?? Number(session.laddr.slice(session.laddr.lastIndexOf(":") + 1));
  const id = createHash("sha1").update(`gears-proxy ${host}:${port}`).digest("hex");
  return { id, host, port };
}

function bulk(text: string): Buffer {
  return Buffer.from(text);
}

const SLOT_COUNT = 16384;
/** Enough to list every key of a slot (GETKEYSINSLOT's count is a long long). */
const ALL_KEYS = "9223372036854775807";

/** A slot's keys are on its master: the question goes there, the answer comes back as it is. */
function askSlotOwner(session: CommandHost, slot: number, argv: (string | number)[], sink?: ReplySink): void {
  const router = session.ctx.router;
  const node = router.routeSlot(slot, session.id);
  router.sendTo(node, encodeCommand(argv), sink ?? session.upstreamSlot(), session.id, slot, session.proto);
}

/**
 * GETKEYSINSLOT/COUNTKEYSINSLOT of the slot the proxy keeps its own keys in: its keys are left
 * out, as KEYS and SCAN leave them out. All of the slot's keys are read to count or list them.
 */
function usersKeysInSlot(session: CommandHost, answer: (keys: Buffer[]) => Buffer): void {
  const slot = session.upstreamSlot();
  askSlotOwner(session, PROXY_KEYS_SLOT, ["CLUSTER", "GETKEYSINSLOT", PROXY_KEYS_SLOT, ALL_KEYS], {
    reply: (data) => {
      const keys = hideProxyKeys(decodeReply(data));
      slot.reply(Array.isArray(keys) ? answer(keys as Buffer[]) : data);
    },
    fail: (message) => slot.fail(message),
  });
}

/** CLUSTER COUNTKEYSINSLOT/GETKEYSINSLOT's integer arguments, or Redis' refusal of them. */
function integers(args: Buffer[]): number[] | string {
  const texts = args.map((a) => a.toString());
  if (!texts.every(isLongLong)) return "ERR value is not an integer or out of range";
  return texts.map(Number);
}

const EMULATED: Record<string, (session: CommandHost, argv: Buffer[]) => void> = {
  slots(session) {
    const me = self(session);
    session.replyValue([[0, 16383, [bulk(me.host), me.port, bulk(me.id)]]]);
  },
  shards(session) {
    const me = self(session);
    const node = new RespMap([
      [bulk("id"), bulk(me.id)],
      [bulk("port"), me.port],
      [bulk("ip"), bulk(me.host)],
      [bulk("endpoint"), bulk(me.host)],
      [bulk("role"), bulk("master")],
      [bulk("replication-offset"), 0],
      [bulk("health"), bulk("online")],
    ]);
    session.replyValue([
      new RespMap([
        [bulk("slots"), [0, 16383]],
        [bulk("nodes"), [node]],
      ]),
    ]);
  },
  nodes(session) {
    const me = self(session);
    const line = `${me.id} ${me.host}:${me.port}@${me.port + 10000} myself,master - 0 0 1 connected 0-16383\n`;
    session.replyText(line);
  },
  info(session) {
    const lines = [
      "cluster_enabled:1",
      "cluster_state:ok",
      "cluster_slots_assigned:16384",
      "cluster_slots_ok:16384",
      "cluster_slots_pfail:0",
      "cluster_slots_fail:0",
      "cluster_known_nodes:1",
      "cluster_size:1",
      "cluster_current_epoch:1",
      "cluster_my_epoch:1",
    ];
    session.replyText(lines.join("\r\n") + "\r\n");
  },
  myid(session) {
    session.replyNow(encodeBulk(self(session).id));
  },
  countkeysinslot(session, argv) {
    if (argv.length !== 3) return session.replyError(wrongArity("cluster|countkeysinslot"));
    const args = integers(argv.slice(2));
    if (typeof args === "string") return session.replyError(args);
    const [slot] = args;
    if (slot < 0 || slot >= SLOT_COUNT) return session.replyError("ERR Invalid slot");
    if (slot !== PROXY_KEYS_SLOT) return askSlotOwner(session, slot, ["CLUSTER", "COUNTKEYSINSLOT", slot]);
    usersKeysInSlot(session, (keys) => encodeInteger(keys.length));
  },
  getkeysinslot(session, argv) {
    if (argv.length !== 4) return session.replyError(wrongArity("cluster|getkeysinslot"));
    const args = integers(argv.slice(2));
    if (typeof args === "string") return session.replyError(args);
    const [slot, count] = args;
    if (slot < 0 || slot >= SLOT_COUNT || count < 0)
      return session.replyError("ERR Invalid slot or number of keys");
    if (slot !== PROXY_KEYS_SLOT)
      return askSlotOwner(session, slot, ["CLUSTER", "GETKEYSINSLOT", slot, argv[3].toString()]);
    usersKeysInSlot(session, (keys) => encodeValue(keys.slice(0, count), session.proto));
  },
  // Redis 7.2: the id of the node's shard, the one shard here (the command table refuses it
  // before 7.2, as the server would).
  myshardid(session) {
    const me = self(session);
    session.replyNow(
      encodeBulk(createHash("sha1").update(`gears-proxy shard ${me.host}:${me.port}`).digest("hex")),
    );
  },
  keyslot(session, argv) {
    if (argv.length !== 3)
      return session.replyError("ERR wrong number of arguments for 'cluster|keyslot' command");
    session.replyNow(encodeInteger(calculateSlot(argv[2])));
  },
};

/**
 * CLUSTER: with --cluster-emulation the proxy presents itself as a one-node cluster that
 * owns every slot, so cluster-mode clients (ioredis Cluster, redis-cli -c) work through
 * it; otherwise the command goes to the upstream like any other.
 */
export const clusterCommand: LocalCommand = (session, request) => {
  const sub = request.argv[1]?.toString().toLowerCase() ?? "";
  if (session.ctx.config.clusterEmulation) {
    const handler = EMULATED[sub];
    if (handler !== undefined) return handler(session, request.argv);
    if (sub === "") return session.replyError("ERR wrong number of arguments for 'cluster' command");
    return void session.replyNow(
      encodeError(
        `ERR CLUSTER ${sub.toUpperCase()} is not available through gears-proxy's cluster emulation`,
      ),
    );
  }
  session.forward("cluster", request);
};

/** READONLY/READWRITE/ASKING: connection flags of a cluster client, meaningless to the proxy. */
export const clusterFlagCommand: LocalCommand = (session, request) => {
  const clusterLike = session.ctx.config.clusterEmulation || session.ctx.router.topology.mode === "cluster";
  if (clusterLike) session.replyNow(OK);
  else session.forward(request.argv[0].toString().toLowerCase(), request);
};
