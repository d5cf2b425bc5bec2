import fc from 'fast-check';
import type { OpenApiDocument } from './contract';

/**
 * fast-check arbitraries read from an OpenAPI 3.0 document's JSON schemas: values the schema
 * allows (arbitraryOf), and small edits that may make a valid value invalid (mutationsOf). The
 * property test decides validity with the document's own validator (helpers/contract.ts), so
 * a generator that strays only costs a discarded example, never a wrong verdict.
 */

type Schema = {
  $ref?: string;
  type?: string;
  enum?: unknown[];
  nullable?: boolean;
  anyOf?: Schema[];
  oneOf?: Schema[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
};

export function resolve(doc: OpenApiDocument, schema: Schema): Schema {
  if (!schema.$ref) return schema;
  const name = schema.$ref.replace('#/components/schemas/', '');
  return resolve(doc, (doc.components.schemas?.[name] ?? {}) as Schema);
}

const codePoints = (s: string) => [...s].length;

function stringOf(s: Schema): fc.Arbitrary<string> {
  const min = s.minLength ?? 0;
  const max = s.maxLength ?? 200;
  const sized = (v: string) => codePoints(v) >= min && codePoints(v) <= max;
  if (s.format === 'uri') {
    const schemes = /^\^\(\?:([a-z|]+)\):\/\//.exec(s.pattern ?? '')?.[1]?.split('|') ?? ['http', 'https'];
    return fc.webUrl({ validSchemes: schemes, withQueryParameters: true }).filter(sized);
  }
  if (s.pattern) return fc.stringMatching(new RegExp(s.pattern, 'u')).filter(sized);
  return fc.string({ unit: 'grapheme', minLength: min, maxLength: Math.min(max, 64) }).filter(sized);
}

/** Values the schema allows (most of the time: the caller checks). */
export function arbitraryOf(doc: OpenApiDocument, raw: Schema): fc.Arbitrary<unknown> {
  const s = resolve(doc, raw);
  const alternatives = s.anyOf ?? s.oneOf;
  let arb: fc.Arbitrary<unknown>;
  if (s.enum) arb = fc.constantFrom(...s.enum);
  else if (alternatives && !s.properties) arb = fc.oneof(...alternatives.map((alt) => arbitraryOf(doc, alt)));
  else if (s.type === 'object' || s.properties) {
    const properties = s.properties ?? {};
    const model = Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, arbitraryOf(doc, v)]));
    arb = fc.record(model, { requiredKeys: (s.required ?? []).filter((k) => k in properties) });
  } else if (s.type === 'string') arb = stringOf(s);
  else if (s.type === 'integer') {
    arb = fc.integer({ min: s.minimum ?? -(2 ** 31), max: Math.min(s.maximum ?? 2 ** 31, Number.MAX_SAFE_INTEGER) });
  } else if (s.type === 'number') arb = fc.double({ noNaN: true, noDefaultInfinity: true });
  else if (s.type === 'boolean') arb = fc.boolean();
  else if (s.type === 'array') {
    arb = fc.array(s.items ? arbitraryOf(doc, s.items) : fc.jsonValue(), {
      minLength: s.minItems ?? 0,
      maxLength: s.maxItems ?? 5,
    });
  } else arb = fc.jsonValue();
  return s.nullable ? fc.option(arb, { nil: null }) : arb;
}

/** Values of other types than a field's, and values just outside its bounds. */
function wrongValuesOf(doc: OpenApiDocument, raw: Schema): unknown[] {
  const s = resolve(doc, raw);
  const values: unknown[] = [null, true, [], {}, '', 1.5, -1, 'not a number', [1, 2]];
  if (s.maxLength !== undefined) values.push('a'.repeat(s.maxLength + 1), '😀'.repeat(s.maxLength + 1));
  if (s.type === 'string') values.push(0, 'a\u0000b', 'a\ufffdb', ' spaced out ', 'ftp://example.com/a.png');
  if (s.maximum !== undefined) values.push(s.maximum + 1);
  if (s.minimum !== undefined) values.push(s.minimum - 1);
  if (s.enum) values.push(`${String(s.enum[0])}x`, 2);
  return values;
}

/** A change to a body, named for the failure message. */
export type Mutation = { what: string; apply(body: Record<string, unknown>): unknown };

/** Edits that may turn a valid body of this schema into an invalid one. */
export function mutationsOf(doc: OpenApiDocument, raw: Schema): fc.Arbitrary<Mutation> {
  const s = resolve(doc, raw);
  const properties = Object.entries(s.properties ?? {});
  const choices: fc.Arbitrary<Mutation>[] = [
    fc.constantFrom<Mutation>(
      { what: 'an array body', apply: (body) => [body] },
      { what: 'an empty body', apply: () => ({}) },
    ),
  ];
  for (const key of s.required ?? []) {
    choices.push(
      fc.constant({
        what: `without ${key}`,
        apply: (body) => Object.fromEntries(Object.entries(body).filter(([k]) => k !== key)),
      }),
    );
  }
  for (const [key, schema] of properties) {
    choices.push(
      fc.constantFrom(...wrongValuesOf(doc, schema)).map((value) => ({
        what: `${key}: ${JSON.stringify(value)?.slice(0, 40)}`,
        apply: (body: Record<string, unknown>) => ({ ...body, [key]: value }),
      })),
    );
  }
  return fc.oneof(...choices);
}
