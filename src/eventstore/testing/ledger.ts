import { Type } from 'typebox';
import { defineMessage, Uuid } from '../../../schemas/message.js';
import { defineCommandHandler } from '../commands.js';
import { defineAggregate, type Decider, assertNever } from '../decider.js';
import type { ServiceNames } from '../streams.js';
import { DomainError } from '../errors.js';

/**
 * A tiny domain for the platform's own tests and benchmarks: ledger accounts that are opened,
 * credited and debited. The platform knows nothing of forums; this is its stand-in.
 */
export const Opened = defineMessage({
  type: 'LedgerAccountOpened',
  schema: Type.Object({ accountId: Type.String(), owner: Type.String() }, { additionalProperties: false }),
});
export const Credited = defineMessage({
  type: 'LedgerAccountCredited',
  schema: Type.Object({ accountId: Type.String(), amount: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }),
});
export const Debited = defineMessage({
  type: 'LedgerAccountDebited',
  schema: Type.Object({ accountId: Type.String(), amount: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }),
});

export type LedgerCommand =
  | { type: 'open'; accountId: string; owner: string }
  | { type: 'credit'; accountId: string; amount: number }
  | { type: 'debit'; accountId: string; amount: number };

export type LedgerEvent =
  | { type: 'LedgerAccountOpened'; data: { accountId: string; owner: string } }
  | { type: 'LedgerAccountCredited'; data: { accountId: string; amount: number } }
  | { type: 'LedgerAccountDebited'; data: { accountId: string; amount: number } };

export type LedgerState = { status: 'none' } | { status: 'open'; owner: string; balance: number; movements: number };

export const ledgerErrors = {
  notFound: (id: string) => new DomainError('account-not-found', 'not-found', `account ${id} does not exist`),
  alreadyOpen: (id: string) => new DomainError('account-already-open', 'conflict', `account ${id} is already open`),
  insufficientFunds: (balance: number) =>
    new DomainError('insufficient-funds', 'conflict', `the balance is ${balance}`, { balance }),
};

export const ledgerDecider: Decider<LedgerCommand, LedgerEvent, LedgerState> = {
  initialState: { status: 'none' },
  decide(command, state) {
    switch (command.type) {
      case 'open':
        if (state.status === 'open') {
          if (state.owner === command.owner) return null;
          throw ledgerErrors.alreadyOpen(command.accountId);
        }
        return { type: 'LedgerAccountOpened', data: { accountId: command.accountId, owner: command.owner } };
      case 'credit':
        if (state.status !== 'open') throw ledgerErrors.notFound(command.accountId);
        return { type: 'LedgerAccountCredited', data: { accountId: command.accountId, amount: command.amount } };
      case 'debit':
        if (state.status !== 'open') throw ledgerErrors.notFound(command.accountId);
        if (state.balance < command.amount) throw ledgerErrors.insufficientFunds(state.balance);
        return { type: 'LedgerAccountDebited', data: { accountId: command.accountId, amount: command.amount } };
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'LedgerAccountOpened':
        return { status: 'open', owner: event.data.owner, balance: 0, movements: 0 };
      case 'LedgerAccountCredited':
        return state.status === 'open'
          ? { ...state, balance: state.balance + event.data.amount, movements: state.movements + 1 }
          : state;
      case 'LedgerAccountDebited':
        return state.status === 'open'
          ? { ...state, balance: state.balance - event.data.amount, movements: state.movements + 1 }
          : state;
      default:
        return assertNever(event);
    }
  },
};

export const ledgerAccount = defineAggregate({
  name: 'account',
  decider: ledgerDecider,
  events: [Opened, Credited, Debited],
  snapshotEvery: 100,
});

/** The ledger's commands and their handlers, on the subjects of a (test) service. */
export function ledgerCommands(names: ServiceNames) {
  const OpenAccount = defineMessage({
    type: 'LedgerOpenAccountCommand',
    subject: names.commandSubject('open-account'),
    schema: Type.Object({ accountId: Uuid(), owner: Type.String({ minLength: 1 }) }, { additionalProperties: false }),
  });
  const Credit = defineMessage({
    type: 'LedgerCreditCommand',
    subject: names.commandSubject('credit'),
    schema: Type.Object({ accountId: Uuid(), amount: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }),
  });
  const Debit = defineMessage({
    type: 'LedgerDebitCommand',
    subject: names.commandSubject('debit'),
    schema: Type.Object({ accountId: Uuid(), amount: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }),
  });
  const handlers = [
    defineCommandHandler({
      command: OpenAccount,
      aggregate: ledgerAccount,
      aggregateId: (b) => b.accountId,
      toCommand: (b): LedgerCommand => ({ type: 'open', accountId: b.accountId, owner: b.owner }),
    }),
    defineCommandHandler({
      command: Credit,
      aggregate: ledgerAccount,
      aggregateId: (b) => b.accountId,
      toCommand: (b): LedgerCommand => ({ type: 'credit', accountId: b.accountId, amount: b.amount }),
    }),
    defineCommandHandler({
      command: Debit,
      aggregate: ledgerAccount,
      aggregateId: (b) => b.accountId,
      toCommand: (b): LedgerCommand => ({ type: 'debit', accountId: b.accountId, amount: b.amount }),
    }),
  ];
  return { OpenAccount, Credit, Debit, handlers };
}
