/**
 * "Did you mean": the nearest known word to a mistyped one, by edit distance, for commands,
 * subcommands, flags, configuration keys and environment variables alike.
 */

/**
 * The optimal-string-alignment distance (Levenshtein plus the swap of two neighbours, the most
 * common typo: `chcek`).
 */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) =>
    Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The known word nearest to `word`, when it is near enough to be what was meant: at most a third
 * of its length away (and at least one edit allowed), or a word that starts with it. Ties go to
 * the first candidate. Case is ignored.
 *
 * @example
 * ```ts
 * closest('chek', ['check', 'ca', 'init']); // 'check'
 * closest('xyz', ['check', 'ca', 'init']); // undefined
 * ```
 */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  const w = word.toLowerCase();
  if (w === '') return undefined;
  let best: { word: string; distance: number } | undefined;
  for (const c of candidates) {
    const distance = editDistance(w, c.toLowerCase());
    if (best === undefined || distance < best.distance) best = { word: c, distance };
  }
  if (best === undefined) return undefined;
  const allowed = Math.max(1, Math.floor(w.length / 3));
  if (best.distance <= allowed) return best.word;
  // A prefix of a longer word (`--trust` for `--trust-anchors`) is what was meant, if only one
  // candidate starts with it.
  const prefixed = [...candidates].filter((c) => c.toLowerCase().startsWith(w));
  return w.length >= 3 && prefixed.length === 1 ? prefixed[0] : undefined;
}

/**
 * `; did you mean "check"?` for a near word, else the empty string: what an "unknown …" message
 * appends.
 *
 * @example
 * ```ts
 * `unknown command "chek"${didYouMean('chek', ['check'])}`; // 'unknown command "chek"; did you mean "check"?'
 * ```
 */
export function didYouMean(
  word: string,
  candidates: Iterable<string>,
  spell: (c: string) => string = (c) => `"${c}"`,
): string {
  const near = closest(word, candidates);
  return near === undefined ? '' : `; did you mean ${spell(near)}?`;
}
