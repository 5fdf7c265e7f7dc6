/**
 * A grpc-js client of the Destination API for tests: an ordinary gRPC client over mTLS, with
 * core's codec as its (de)serializers, that records the updates of a Get stream.
 */
import * as grpc from '@grpc/grpc-js';
import type { Address, DestinationProfile, DestinationUpdate } from '../../core/index.js';
import {
  DESTINATION_GET_PATH,
  DESTINATION_GET_PROFILE_PATH,
  decodeDestinationUpdate,
  encodeGetDestination,
  formatAddress,
} from '../../core/index.js';
import { decodeDestinationProfile } from '../../core/destination-wire.js';
import type { GetDestination } from '../../core/destination-wire.js';

const definition = {
  get: {
    path: DESTINATION_GET_PATH,
    requestStream: false,
    responseStream: true,
    requestSerialize: (r: GetDestination) => encodeGetDestination(r),
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => decodeDestinationUpdate(b),
  },
  getProfile: {
    path: DESTINATION_GET_PROFILE_PATH,
    requestStream: false,
    responseStream: true,
    requestSerialize: (r: GetDestination) => encodeGetDestination(r),
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => decodeDestinationProfile(b),
  },
} as const;
const DestinationClient = grpc.makeGenericClientConstructor(definition, 'Destination');

/** One followed stream: what it received, and how it ended. */
export interface RecordedStream<T> {
  readonly messages: T[];
  /** Resolves with the status the stream ended with. */
  readonly ended: Promise<grpc.StatusObject>;
  /** Waits until `pred` holds for the messages so far (or for a new one), bounded. */
  until(what: string, pred: (messages: readonly T[]) => boolean, timeoutMs?: number): Promise<void>;
  cancel(): void;
}

function record<T>(call: grpc.ClientReadableStream<T>): RecordedStream<T> {
  const messages: T[] = [];
  const waiters = new Set<() => void>();
  call.on('data', (m: T) => {
    messages.push(m);
    for (const w of [...waiters]) w();
  });
  const ended = new Promise<grpc.StatusObject>((resolve) => {
    call.on('status', resolve);
    call.on('error', () => undefined);
  });
  return {
    messages,
    ended,
    until: (what, pred, timeoutMs = 10_000) =>
      new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (!pred(messages)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(messages)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    cancel: () => call.cancel(),
  };
}

/** A connected client. */
export interface DestinationTestClient {
  get(path: string): RecordedStream<DestinationUpdate>;
  getProfile(path: string): RecordedStream<DestinationProfile>;
  close(): void;
}

/**
 * Dials the destination service at `address`, which must present `serverName`, with the client
 * certificate `cert` (omit it to try without one).
 */
export function destinationTestClient(
  address: Address,
  o: {
    serverName: string;
    anchorsPem: string;
    cert?: { keyPem: string; certChainPem: string };
  },
): DestinationTestClient {
  const creds = grpc.credentials.createSsl(
    Buffer.from(o.anchorsPem),
    o.cert === undefined ? null : Buffer.from(o.cert.keyPem),
    o.cert === undefined ? null : Buffer.from(o.cert.certChainPem),
  );
  const client = new DestinationClient(formatAddress(address), creds, {
    'grpc.ssl_target_name_override': o.serverName,
    'grpc.default_authority': o.serverName,
    // Its own connection, closed with the client (not kept in grpc-js's shared pool for 10 s).
    'grpc.use_local_subchannel_pool': 1,
  });
  const request = (path: string): GetDestination => ({ scheme: 'k8s', path, contextToken: '' });
  return {
    get: (path) =>
      record(
        (
          client as unknown as Record<
            string,
            (r: GetDestination) => grpc.ClientReadableStream<DestinationUpdate>
          >
        )['get']!.call(client, request(path)),
      ),
    getProfile: (path) =>
      record(
        (
          client as unknown as Record<
            string,
            (r: GetDestination) => grpc.ClientReadableStream<DestinationProfile>
          >
        )['getProfile']!.call(client, request(path)),
      ),
    close: () => client.close(),
  };
}
