/**
 * IP address text, once for every caller (certificate IP SANs, the destination API's addresses).
 */

/**
 * RFC 5952 text of a 16-byte IPv6 address: lower-case hex without leading zeros, the longest run
 * of two or more zero groups (the first on a tie) as `::` (§4). An IPv4-mapped address is left
 * in hex here: the destination API keys endpoints by this text; a certificate's IP SAN dots it.
 */
export function formatIpv6(b: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
