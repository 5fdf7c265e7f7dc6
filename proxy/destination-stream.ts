/**
 * One `Get` stream of the Destination API over the proxy's HTTP/2 connection to the destination
 * service: the gRPC request (node's http2, not grpc-js), the length-prefixed messages of the
 * answer read as they come (bounded in size, uncompressed only), and how the stream ended.
 */
import { constants as h2 } from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import type { DestinationUpdate } from '../core/index.js';
import {
  DESTINATION_GET_PATH,
  decodeDestinationUpdate,
  decodeGrpcMessage,
  encodeGetDestination,
  frameGrpcMessage,
} from '../core/index.js';

/** Largest message accepted on a stream (an add of a few thousand endpoints). */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const INVALID_ARGUMENT = 3;

/** How a stream ended. */
export type StreamEnd =
  /** The service refused the target for good (INVALID_ARGUMENT): do not ask again. */
  | { readonly kind: 'invalid'; readonly message: string }
  /** Anything else: the stream can be opened again later; `reason` says why it ended. */
  | { readonly kind: 'failed'; readonly reason: string };

/** What a {@link openGetStream} caller hears. */
export interface GetStreamHandlers {
  /** Each update, in order. */
  readonly update: (u: DestinationUpdate) => void;
  /**
   * The end, once; not after a message the client refused (`failed` is called for it at once,
   * with the stream cancelled). `connectionError` says why the connection failed, if it did.
   */
  readonly end: (e: StreamEnd) => void;
  /** Why the connection failed, when it did (a stream's close says less: "code 2"). */
  readonly connectionError: () => string | undefined;
}

/**
 * Opens `Get` for `path` and reads its answer.
 */
export function openGetStream(
  session: ClientHttp2Session,
  request: { readonly path: string; readonly authority: string; readonly contextToken: string },
  on: GetStreamHandlers,
): ClientHttp2Stream {
  const stream = session.request({
    [h2.HTTP2_HEADER_METHOD]: 'POST',
    [h2.HTTP2_HEADER_PATH]: DESTINATION_GET_PATH,
    [h2.HTTP2_HEADER_AUTHORITY]: request.authority,
    [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
    [h2.HTTP2_HEADER_TE]: 'trailers',
  });
  let ended = false;
  const end = (e: StreamEnd): void => {
    if (ended) return;
    ended = true;
    on.end(e);
  };
  let buffered: Buffer = Buffer.alloc(0);
  let trailers: Record<string, unknown> | undefined;
  let headers: Record<string, unknown> = {};
  stream.on('response', (h) => (headers = h));
  stream.on('trailers', (t) => (trailers = t));
  stream.on('data', (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    while (buffered.length >= 5 && !ended) {
      const len = buffered.readUInt32BE(1);
      if (buffered[0] !== 0 || len > MAX_MESSAGE_BYTES) {
        stream.close(h2.NGHTTP2_CANCEL);
        end({
          kind: 'failed',
          reason: 'the destination service sent a compressed or oversized message',
        });
        return;
      }
      if (buffered.length < 5 + len) break;
      const message = buffered.subarray(5, 5 + len);
      buffered = buffered.subarray(5 + len);
      let update: DestinationUpdate;
      try {
        update = decodeDestinationUpdate(message);
      } catch (err) {
        stream.close(h2.NGHTTP2_CANCEL);
        end({ kind: 'failed', reason: (err as Error).message });
        return;
      }
      on.update(update);
    }
  });
  stream.on('error', () => undefined); // the 'close' below says what happened
  // On the next turn: a failed connection's 'error' (which says why) comes after its streams close.
  stream.on('close', () =>
    setImmediate(() => {
      const final = trailers ?? headers;
      const status = final['grpc-status'];
      const message = decodeGrpcMessage(final['grpc-message'] as string | undefined);
      if (status === String(INVALID_ARGUMENT)) {
        end({ kind: 'invalid', message });
        return;
      }
      end({
        kind: 'failed',
        reason:
          status === undefined
            ? (on.connectionError() ?? `stream closed (code ${stream.rstCode})`)
            : `stream ended with gRPC status ${String(status)} ${message}`,
      });
    }),
  );
  stream.end(
    frameGrpcMessage(
      encodeGetDestination({
        scheme: 'k8s',
        path: request.path,
        contextToken: request.contextToken,
      }),
    ),
  );
  return stream;
}
