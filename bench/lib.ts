/** Helpers shared by the benchmarks: settings from the environment, and latency statistics. */

export function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw.replaceAll('_', ''));
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

export const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

export const round = (n: number, digits = 0) => Number(n.toFixed(digits));

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Sorted copy without NaN (failed requests). */
export function sorted(xs: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(Array.prototype.filter.call(xs, (x: number) => !Number.isNaN(x)) as number[]);
  return out.sort();
}

export function percentile(s: Float64Array, q: number): number {
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

export function latencySummary(xs: ArrayLike<number>) {
  const s = sorted(xs);
  return {
    p50Ms: round(percentile(s, 0.5), 2),
    p90Ms: round(percentile(s, 0.9), 2),
    p99Ms: round(percentile(s, 0.99), 2),
    maxMs: round(s.length === 0 ? NaN : s[s.length - 1]!, 2),
    samples: s.length,
  };
}
