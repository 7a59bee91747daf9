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
    onread: {
      buffer: READ_BUFFER,
      callback: (nread: number, buf: Uint8Array): boolean => {
        // The buffer is the next read's too: what leaves here must be a copy.
        const chunk = Buffer.allocUnsafe(nread);
        chunk.set(buf.subarray(0, nread));
        onBytes(chunk);
        return true;
      },
    },
  } as net.SocketConstructorOpts);
  socket.once("close", () => accepted.destroy());
  return socket;
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
