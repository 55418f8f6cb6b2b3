/** A bounded map that forgets the least recently used entry first. */
export class LruCache<K, V> {
  readonly #entries = new Map<K, V>();
  constructor(readonly capacity: number) {}

  get(key: K): V | undefined {
    const value = this.#entries.get(key);
    if (value !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, value);
    }
    return value;
  }

  /** The entry, without making it the most recently used. */
  peek(key: K): V | undefined {
    return this.#entries.get(key);
  }

  set(key: K, value: V): void {
    this.#entries.delete(key);
    this.#entries.set(key, value);
    if (this.#entries.size > this.capacity) {
      // A sixteenth at a time, through one iterator: finding the oldest entry walks past the
      // slots the Map keeps for deleted entries until it compacts, and doing that on every set
      // of a full cache cost 3% of a busy command handler (bench:content).
      let excess = Math.max(1, Math.ceil(this.capacity / 16));
      for (const key of this.#entries.keys()) {
        if (excess-- === 0) break;
        this.#entries.delete(key);
      }
    }
  }

  delete(key: K): void {
    this.#entries.delete(key);
  }

  clear(): void {
    this.#entries.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}
