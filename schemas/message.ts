import { Type, type Static, type TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
// Registers this system's `date-time` and `uuid` checks before any schema below is compiled.
import './formats.js';

/** One reason a value failed validation: where, and what was expected. */
export interface ValidationIssue {
  readonly path: string;
  readonly message: string;
}

/** A compiled JSON Schema: the one runtime check for a message or body, typed from the schema. */
export interface Validator<T> {
  readonly schema: TSchema;
  check(value: unknown): value is T;
  /** Every reason `value` fails, empty when it is valid. */
  issues(value: unknown): ValidationIssue[];
}

export function compileValidator<S extends TSchema>(schema: S): Validator<Static<S>> {
  const compiled = Compile(schema);
  return {
    schema,
    check: (value: unknown): value is Static<S> => compiled.Check(value),
    issues: (value: unknown) =>
      compiled.Check(value)
        ? []
        : [...compiled.Errors(value)].slice(0, 20).map((e) => ({
            path: e.instancePath === '' ? '/' : e.instancePath,
            message: e.message,
          })),
  };
}

/**
 * A message that crosses a process boundary: its name in the `Message-Type` header, its
 * `Message-Version`, the subject it travels on (commands, notifications and requests) and
 * the JSON Schema of its body. Everything that crosses a boundary is declared this way.
 */
export interface MessageDefinition<S extends TSchema = TSchema> {
  readonly type: string;
  readonly version: number;
  readonly subject: string | undefined;
  readonly schema: S;
  readonly validator: Validator<Static<S>>;
}

export type MessageOf<D> = D extends MessageDefinition<infer S> ? Static<S> : never;

export function defineMessage<S extends TSchema>(def: {
  type: string;
  version?: number;
  subject?: string;
  schema: S;
}): MessageDefinition<S> {
  return {
    type: def.type,
    version: def.version ?? 1,
    subject: def.subject,
    schema: def.schema,
    validator: compileValidator(def.schema),
  };
}

/** Helpers shared by schemas: ids and times are strings with a format, never free text. */
export const Uuid = (options: { description?: string } = {}) => Type.String({ format: 'uuid', ...options });
export const Timestamp = (options: { description?: string } = {}) => Type.String({ format: 'date-time', ...options });

/** An object schema that refuses properties it does not name: every message and body is one. */
export const strictObject = <P extends Parameters<typeof Type.Object>[0]>(properties: P) =>
  Type.Object(properties, { additionalProperties: false });
