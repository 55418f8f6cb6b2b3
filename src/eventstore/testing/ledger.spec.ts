import { describe, it } from 'vitest';
import { deciderSpec } from './decider-spec.js';
import { ledgerDecider, type LedgerEvent } from './ledger.js';

const spec = deciderSpec(ledgerDecider);
const opened: LedgerEvent = { type: 'LedgerAccountOpened', data: { accountId: 'a', owner: 'ann' } };
const credited = (amount: number): LedgerEvent => ({ type: 'LedgerAccountCredited', data: { accountId: 'a', amount } });

describe('ledger decider (the platform test domain)', () => {
  it('opens an account', () => {
    spec.given([]).when({ type: 'open', accountId: 'a', owner: 'ann' }).then(opened);
  });
  it('treats opening an open account again by its owner as a no-op', () => {
    spec.given([opened]).when({ type: 'open', accountId: 'a', owner: 'ann' }).then(null);
  });
  it('refuses opening an account someone else holds', () => {
    spec.given([opened]).when({ type: 'open', accountId: 'a', owner: 'bo' }).thenFails('account-already-open');
  });
  it('refuses a credit on an account that does not exist', () => {
    spec.given([]).when({ type: 'credit', accountId: 'a', amount: 1 }).thenFails('account-not-found');
  });
  it('refuses a debit beyond the balance', () => {
    spec
      .given([opened, credited(5)])
      .when({ type: 'debit', accountId: 'a', amount: 6 })
      .thenFails('insufficient-funds');
  });
  it('debits within the balance', () => {
    spec
      .given([opened, credited(5)])
      .when({ type: 'debit', accountId: 'a', amount: 5 })
      .then({ type: 'LedgerAccountDebited', data: { accountId: 'a', amount: 5 } });
  });
});
