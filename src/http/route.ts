import type Joi from 'joi';
import type { Context } from 'koa';
import type { FailureKind } from '../errors';

/** Which code of the API document each kind of failure is, for one route. */
export type CodeTable = Partial<Record<FailureKind, number>> & { invalid: number; other: number };

/** A code any route may answer, beside its own table, and the routes that can answer it. */
export interface CommonCode {
  /** A document code (negative) or, for a failure answered outside HTTP 200, its HTTP status. */
  code: number;
  /**
   * Whether a guard may answer this route with it, in any AUTH_MODE and configuration: the
   * OpenAPI document lists the code on exactly these routes, and the contract tests hold every
   * real answer to the document (test/helpers/contract.ts), so a guard that refuses a route this
   * does not name fails the suite.
   */
  on(route: RouteSpec): boolean;
}

/**
 * Codes every route shares, beside its own table: the one place a guard's failure gets its code.
 * The envelope answers a failure of one of these kinds with it (unless the route's table says
 * otherwise), and the document lists it on the routes `on` names. A new guard's failure is a
 * new entry here (and its kind and meanings in errors.ts).
 */
export const COMMON_CODES = {
  // auth.ts on routes with an owner (strict mode) or a required session; identity.ts on
  // identifying routes (a proof for another openid, or, in strict mode, none).
  unauthenticated: {
    code: -10,
    on: (route) => route.owner !== undefined || route.session === 'required' || route.identifies === true,
  },
  // rate-limit.ts: every route unless its spec opts out.
  rateLimited: { code: 429, on: (route) => route.rateLimited !== false },
} satisfies Partial<Record<FailureKind, CommonCode>>;

/** The common code of a failure kind, if it has one. */
export function commonCode(kind: FailureKind): CommonCode | undefined {
  return (COMMON_CODES as Partial<Record<FailureKind, CommonCode>>)[kind];
}

/** JSON text already serialised (the cached user): spliced into the envelope as is. */
export class RawJson {
  constructor(readonly json: string) {}
}

export interface RouteSpec<In = unknown> {
  /** The last path segment: POST /service/user/<name>. */
  name: string;
  summary: string;
  /** Validates (and converts) the body; compiled once. A failure is the route's `invalid` code. */
  input: Joi.ObjectSchema<In>;
  codes: CodeTable;
  /**
   * A shortcut past `input` for the exact body most calls send: the value `input` would give,
   * or undefined to let `input` decide. It may decline anything, but must never accept what
   * `input` refuses nor answer another value (each is held to its schema by a test).
   */
  fastInput?(body: unknown): In | undefined;
  /**
   * Counted by the rate limits (http/rate-limit.ts) unless false: every route is, by default,
   * so a new route cannot be forgotten. Opting out needs a reason beside it.
   */
  rateLimited?: boolean;
  /** What one call takes from the client's budget (RATE_LIMIT_IP); 1 unless said. */
  rateCost?: number;
  /**
   * Whose data the call touches. In strict mode (AUTH_MODE=token) a route with an owner
   * demands a token of that very user.
   */
  owner?(input: In): { openid?: string; user_id?: number };
  /**
   * 'required': the route runs only for a live session, in every AUTH_MODE (code -10 without
   * one); the handler finds it with sessionOf(ctx). For routes that act on "the user of the
   * session" rather than on a user named in the input.
   */
  session?: 'required';
  /**
   * The body is multipart/form-data, read by the handler itself from ctx.req (the body parser
   * leaves multipart alone); `input` then validates nothing but what the JSON parser saw ({}).
   */
  multipart?: {
    /** The form field that carries the file. */
    file: string;
    description: string;
    /** Largest file, in bytes: one byte more is HTTP 413. */
    maxBytes: number;
  };
  /**
   * The call acts for the caller's own openid (login, loginByOpenid): the identity guard
   * (http/identity.ts) settles which, from a js_code, a session token, a trusted gateway's
   * header or, in openid mode only, the body's bare openid, and leaves it in the input.
   */
  identifies?: boolean;
  /**
   * What `data` holds on success (code 0). Not checked at run time: it is the API page's source
   * (src/http/openapi.ts), and the tests hold real answers to it.
   */
  output?: Joi.Schema;
  /** Does the work on the validated input and returns `data`, or throws a ServiceError. */
  handle(input: In, ctx: Context): Promise<unknown>;
}

/** Keeps each route's input type tied to its own schema while routes share one list. */
export function defineRoute<In>(spec: RouteSpec<In>): RouteSpec {
  return spec as unknown as RouteSpec;
}

/**
 * Runs after validation and before the handler (rate limits, authentication); throws (or
 * rejects) to refuse. A check that has nothing to wait for may answer at once, undefined.
 */
export type RouteCheck = (ctx: Context, input: unknown) => Promise<void> | void;

/**
 * Gives a route its check, or null when there is nothing to check on that route (an open
 * route in strict mode, limits turned off): decided once when the route is mounted, so a
 * request pays only for the checks that apply to it.
 */
export type RouteGuard = (route: RouteSpec) => RouteCheck | null;

export interface RouteState {
  route?: RouteSpec;
  data?: unknown;
  /** The document code of the answer, set by the envelope (absent for non-envelope answers). */
  code?: number;
  /** From X-Request-Id, or generated; echoed in the response and on every log line of the request. */
  requestId?: string;
  /** The name of the operations endpoint (healthz, metrics, docs...) that answered, if one did. */
  ops?: string;
}
