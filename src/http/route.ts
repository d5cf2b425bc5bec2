import type { Context } from 'koa';
import type { FailureKind } from '../errors';

/** Which code of the API document each kind of failure is, for one route. */
export type CodeTable = Partial<Record<FailureKind, number>> & { invalid: number; other: number };

/** JSON text already serialised (the cached user): spliced into the envelope as is. */
export class RawJson {
  constructor(readonly json: string) {}
}

export interface RouteSpec {
  /** The last path segment: POST /service/user/<name>. */
  name: string;
  codes: CodeTable;
  /** Validates the body (throwing ServiceError) and does the work; returns `data`. */
  handle(body: unknown, ctx: Context): Promise<unknown>;
}

export interface RouteState {
  route?: RouteSpec;
  data?: unknown;
}
