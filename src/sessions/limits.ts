/**
 * SESSION_MAX_PER_USER's bound, apart from store.ts: the configuration needs it, and the knex
 * CLI loads the configuration through ts-node, which does not map tsconfig `paths`, so nothing
 * it loads may import wechat-user-sessions before that package is built.
 */
export const MAX_SESSIONS_PER_USER = 1000;
