/**
 * Reads V8 `.heapsnapshot` files (as `--heapsnapshot-signal` or `v8.writeHeapSnapshot` write
 * them) into counts and self sizes per node type and name (the constructor, for objects), and
 * diffs two of them: what grew between an early and a late snapshot of the same process.
 */
import { readFile } from 'node:fs/promises';

/** Count and summed self size of the heap nodes of one type and name. */
export interface HeapGroup {
  readonly key: string;
  readonly count: number;
  readonly selfBytes: number;
}

interface SnapshotJson {
  readonly snapshot: {
    readonly meta: {
      readonly node_fields: readonly string[];
      readonly node_types: readonly [readonly string[], ...unknown[]];
    };
  };
  readonly nodes: readonly number[];
  readonly strings: readonly string[];
}

/** Groups a parsed snapshot's nodes by `<type>:<name>` (e.g. `object:Map`, `native:system / ...`). */
export function summarizeHeap(json: unknown): Map<string, HeapGroup> {
  const s = json as SnapshotJson;
  const fields = s.snapshot.meta.node_fields;
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  if (typeAt < 0 || nameAt < 0 || sizeAt < 0) throw new Error('not a V8 heap snapshot');
  const types = s.snapshot.meta.node_types[0];
  const groups = new Map<string, { count: number; selfBytes: number }>();
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + typeAt]!] ?? '?';
    // Strings and numbers are named by their value: group them by type alone.
    const name =
      type === 'string' ||
      type === 'concatenated string' ||
      type === 'sliced string' ||
      type === 'number'
        ? ''
        : (s.strings[s.nodes[i + nameAt]!] ?? '?').slice(0, 80);
    const key = `${type}:${name}`;
    const g = groups.get(key) ?? { count: 0, selfBytes: 0 };
    g.count++;
    g.selfBytes += s.nodes[i + sizeAt]!;
    groups.set(key, g);
  }
  return new Map([...groups].map(([key, g]) => [key, { key, ...g }]));
}

/** Reads and summarizes a `.heapsnapshot` file. */
export async function summarizeHeapFile(file: string): Promise<Map<string, HeapGroup>> {
  return summarizeHeap(JSON.parse(await readFile(file, 'utf8')));
}

/** Late minus early, per group, largest growth in self size first. */
export function diffHeaps(
  early: Map<string, HeapGroup>,
  late: Map<string, HeapGroup>,
): HeapGroup[] {
  const keys = new Set([...early.keys(), ...late.keys()]);
  return [...keys]
    .map((key) => ({
      key,
      count: (late.get(key)?.count ?? 0) - (early.get(key)?.count ?? 0),
      selfBytes: (late.get(key)?.selfBytes ?? 0) - (early.get(key)?.selfBytes ?? 0),
    }))
    .sort((a, b) => b.selfBytes - a.selfBytes);
}

/** The summed self size of every node. */
export function totalBytes(groups: Map<string, HeapGroup>): number {
  let total = 0;
  for (const g of groups.values()) total += g.selfBytes;
  return total;
}
