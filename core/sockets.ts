/**
 * Closing a connection with a reset, once for every listener.
 */
import type { Socket } from 'node:net';

/**
 * Closes `socket` with a TCP reset (the peer learns at once that it was refused), or plainly when
 * its write side is already shutting down: a peer that closed first makes node end the socket,
 * and a reset then fails in libuv (a stream being shut down cannot be reset) and leaves the handle
 * half-closed, which kept `meshid ca` busy in node's exit clean-up forever after a handshake flood
 * (issue 20). Does nothing to a destroyed socket.
 *
 * @example
 * ```ts
 * resetSocket(app); // refuse the app's connection: no upstream can be reached
 * ```
 */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded) socket.destroy();
  else socket.resetAndDestroy();
}
