/**
 * The outbound detect stage: what an app sends first, read just far enough to tell an HTTP/2
 * prior-knowledge client from everything else. The bytes read are handed on, never lost.
 */
import type { Socket } from 'node:net';
import { HTTP2_PREFACE as H2_PREFACE, readUntil } from './detect.js';

/** What an app sent before the proxy chose how to carry its connection. */
export interface FirstBytes {
  readonly bytes: Buffer;
  /** The app half-closed (or closed) before the decision. */
  readonly ended: boolean;
}

/** Whether what an app sent first opens with the HTTP/2 preface. */
export function opensWithH2Preface(bytes: Buffer): boolean {
  return (
    bytes.length >= H2_PREFACE.length && bytes.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)
  );
}

/**
 * Reads what the app sends first, just enough to tell whether it opens with the HTTP/2
 * preface: a TLS server that speaks HTTP/2 needs ALPN `h2` offered in the ClientHello,
 * before any byte has been carried. Anything else is carried without ALPN, which TLS servers
 * take as HTTP/1.1 or raw bytes. A client-first protocol decides this at once; only a
 * server-first one (it sends nothing until greeted) waits out `timeoutMs`. The socket is
 * paused when this resolves.
 */
export function sniffFirstBytes(app: Socket, timeoutMs: number): Promise<FirstBytes> {
  return readUntil(app, timeoutMs, (seen) => {
    const n = Math.min(seen.length, H2_PREFACE.length);
    return n === H2_PREFACE.length || !seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
  });
}
