/** The p-th percentile (nearest rank) of ascending `sorted` samples; 0 for none. Used by `xpsr bench` and scripts/bench-*.mjs. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}
