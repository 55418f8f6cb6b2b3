import { expect } from 'vitest';
import type { Decider, DomainEvent } from '../decider.js';
import { DomainError } from '../errors.js';

/**
 * Given/when/then for pure deciders (after Emmett's DeciderSpecification):
 * `spec.given([events]).when(command).then(event | null)` or `.thenFails(code)`.
 */
export function deciderSpec<C, E extends DomainEvent, S>(decider: Decider<C, E, S>) {
  return {
    given(events: readonly E[]) {
      const state = events.reduce((s, e) => decider.evolve(s, e), decider.initialState);
      return {
        when(command: C) {
          const run = () => decider.decide(command, state);
          return {
            then(expected: E | null) {
              expect(run()).toEqual(expected);
            },
            thenFails(code: string) {
              let caught: unknown;
              try {
                run();
              } catch (err) {
                caught = err;
              }
              expect(caught, `expected a DomainError ${code}`).toBeInstanceOf(DomainError);
              expect((caught as DomainError).code).toBe(code);
            },
          };
        },
      };
    },
  };
}
