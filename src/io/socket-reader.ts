import net from "node:net";

/**
 * Where every adopted socket reads into. One buffer serves them all: a read callback runs
 * to its end before the event loop reads from any other socket, and it copies the bytes out
 * first. 64 KB is what libuv offers a read by default.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** The part of a Socket that Node does not declare: the libuv handle it wraps. */
interface WithHandle {
  _handle: object | null;
}

/**
 * Delivers a client socket's bytes to `onBytes` and returns the socket to write to and
 * listen on ('close', 'error', 'drain'); pause() and resume() keep working.
 *
 * Why by hand: a socket's 'data' path costs, per read, a new ArrayBuffer made in C++ and a
 * trip through the Readable machinery (push, emit, read-more ticks). At one request per
 * read (clients that do not pipeline) that was 2.5-3 µs of the proxy's ~12-15 µs of CPU per
 * request (bench/RESULTS.md, "Client reads without the stream machinery"). Node skips both
 * for a socket made with `onread`, but offers that option only to sockets the program
 * connects, not to those a server accepts. So a plain TCP connection is accepted paused
 * (`pauseOnConnect`) and its handle moves to a new Socket made with `onread`; the accepted
 * Socket, handle-less, is destroyed when the new one closes, which keeps the server's
 * connection count (and so `server.close()`) right. Anything else (a TLS socket, one not
 * accepted paused) reads the usual way.
 */
export function readBytes(accepted: net.Socket, onBytes: (chunk: Buffer) => void): net.Socket {
  const shell = accepted as net.Socket & WithHandle;
  const handle = shell._handle;
  if (!canAdopt(accepted, handle)) {
    accepted.on("data", onBytes);
    if (accepted.isPaused()) accepted.resume();
    return accepted;
  }
  shell._handle = null;
  const socket = new net.Socket({
    handle,
    readable: true,
    writable: true,
    onread: { buffer: READ_BUFFER, callback: copyOut(onBytes) },
  } as net.SocketConstructorOpts);
  socket.once("close", () => accepted.destroy());
  return socket;
}

/**
 * A TCP connection to host:port whose bytes go to `onBytes`, read as readBytes reads a
 * client's: into the shared buffer, copied out, no stream machinery. For the proxy's
 * connections to its servers, where each read carries the replies of many clients.
 */
export function connectReading(host: string, port: number, onBytes: (chunk: Buffer) => void): net.Socket {
  return net.connect({
    host,
    port,
    noDelay: true,
    onread: { buffer: READ_BUFFER, callback: copyOut(onBytes) },
  });
}

/**
 * Reads up to this many bytes are copied by a loop: a request that does not pipeline (a GET,
 * an INCR) is 30-60 bytes, and a loop that short costs less than the view `set` needs.
 */
const LOOP_COPY_MAX = 128;

/** The onread callback: the buffer is the next read's too, so what leaves here is a copy. */
function copyOut(onBytes: (chunk: Buffer) => void): (nread: number, buf: Uint8Array) => boolean {
  return (nread, buf) => {
    const chunk = Buffer.allocUnsafe(nread);
    if (nread <= LOOP_COPY_MAX) for (let i = 0; i < nread; i++) chunk[i] = buf[i];
    else chunk.set(buf.subarray(0, nread));
    onBytes(chunk);
    return true;
  };
}

function canAdopt(accepted: net.Socket, handle: object | null): handle is object {
  return (
    handle !== null &&
    accepted.constructor === net.Socket &&
    accepted.isPaused() &&
    !accepted.destroyed &&
    accepted.readableLength === 0
  );
}
