import { encodeBulk, encodeSimple, OK } from "../resp/encode.js";
import { wrongArity, type LocalCommand } from "./command-host.js";
import { since62 } from "./server-features.js";

const PONG = encodeSimple("PONG");

/**
 * PING goes to the server, so that a client sees what Redis would say (BUSY while a script
 * runs too long); while the server cannot be reached, the proxy answers for itself.
 */
export const ping: LocalCommand = (session, request) => {
  const argv = request.argv;
  if (argv.length > 2) return session.replyError(wrongArity("ping"));
  if (!session.enterSharedLane(request)) return;
  const pong = argv.length === 2 ? encodeBulk(argv[1]) : PONG;
  const slot = session.upstreamSlot();
  const sink = { reply: (data: Buffer) => slot.reply(data), fail: () => slot.reply(pong) };
  session.ctx.router.forward("ping", argv, null, sink, {
    db: session.db,
    affinity: session.id,
    proto: session.proto,
  });
};

export const echo: LocalCommand = (session, { argv }) => {
  if (argv.length !== 2) session.replyError(wrongArity("echo"));
  else session.replyNow(encodeBulk(argv[1]));
};

export const quit: LocalCommand = (session, request) => {
  // After what came before it: a SUBSCRIBE's confirmation pipelined ahead of it included.
  if (!session.waitForIdle(request)) return;
  session.replyAndClose(OK);
};

export const reset: LocalCommand = (session, request) => {
  if (!session.waitForIdle(request)) return;
  session.resetState();
  session.replyNow(encodeSimple("RESET"));
};

export const select: LocalCommand = (session, { argv }) => {
  if (argv.length !== 2) {
    session.replyError(wrongArity("select"));
    return;
  }
  const text = argv[1].toString();
  const db = Number(text);
  if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(db)) {
    session.replyError(
      since62(session.ctx.upstreamServer)
        ? "ERR value is not an integer or out of range"
        : "ERR invalid DB index",
    );
    return;
  }
  if (session.ctx.router.topology.mode === "cluster" && db !== 0) {
    session.replyError("ERR SELECT is not allowed in cluster mode");
    return;
  }
  if (db < 0) {
    session.replyError("ERR DB index is out of range");
    return;
  }
  // The server validates the index; the session switches only when it agrees.
  const slot = session.upstreamSlot();
  slot.onReply = (data) => {
    if (data[0] === 43 /* + */) session.db = db;
  };
  session.forwardInDb(argv, db, slot);
};
