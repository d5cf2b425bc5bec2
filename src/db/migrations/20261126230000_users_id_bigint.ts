import type { Knex } from 'knex';

/**
 * users.id INT UNSIGNED -> BIGINT UNSIGNED: 4,294,967,295 ids is a number an attacker (or a
 * bug that spends ids) can reach. A column type change copies the table (writes wait for it):
 * on a large table, run it when traffic is low or with an online schema change tool.
 */
export async function up(db: Knex): Promise<void> {
  await db.raw('ALTER TABLE users MODIFY id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT');
}

const INT_UNSIGNED_MAX = 0xffffffff;

/** Back to INT UNSIGNED, refused while an id does not fit (MySQL would clip it, or fail half-way). */
export async function down(db: Knex): Promise<void> {
  const [[{ max }]] = (await db.raw('SELECT MAX(id) AS max FROM users')) as [[{ max: number | string | null }]];
  if (max !== null && BigInt(max) > BigInt(INT_UNSIGNED_MAX)) {
    throw new Error(`users.id cannot go back to INT UNSIGNED: the largest id is ${max}`);
  }
  await db.raw('ALTER TABLE users MODIFY id INT UNSIGNED NOT NULL AUTO_INCREMENT');
}
