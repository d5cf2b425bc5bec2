import type { Knex } from 'knex';

/**
 * users.phone holds ciphertext from now on (src/users/phone-cipher.ts): `v1.<key id>.<iv>.<body>`
 * in base64url, about 60 characters for an 11-digit number and up to 229 for the longest
 * contact string allowed (32 characters of up to 4 bytes). VARCHAR(32) -> VARCHAR(255).
 *
 * The change of the length prefix (1 -> 2 bytes) copies the table and writes wait for it, as
 * 20261126230000_users_id_bigint does: on a large table run it when traffic is low or with an
 * online schema change tool. The phones already there are encrypted afterwards, in batches and
 * without locking the table, by `npm run rekey` (`node dist/src/rekey.js` from the build); the
 * service reads both forms until then and writes ciphertext only.
 */
export async function up(db: Knex): Promise<void> {
  await db.raw('ALTER TABLE users MODIFY phone VARCHAR(255) NOT NULL');
  // A plain-text phone is at most 32 characters; ciphertext is longer. Stops at the first one.
  const [[found]] = (await db.raw(
    "SELECT 1 AS plain FROM users WHERE phone <> '' AND CHAR_LENGTH(phone) <= 32 LIMIT 1",
  )) as [[{ plain: number } | undefined]];
  if (found) {
    process.stderr.write(
      'users.phone holds plain-text phone numbers: encrypt them with `npm run rekey` ' +
        '(`node dist/src/rekey.js` from the build); docs/phone-encryption.md\n',
    );
  }
}

/** Back to VARCHAR(32), refused while a value does not fit (no ciphertext does). */
export async function down(db: Knex): Promise<void> {
  const [[{ longest }]] = (await db.raw('SELECT MAX(CHAR_LENGTH(phone)) AS longest FROM users')) as [
    [{ longest: number | null }],
  ];
  if (longest !== null && longest > 32) {
    throw new Error(
      `users.phone cannot go back to VARCHAR(32): it holds values of up to ${longest} characters (ciphertext)`,
    );
  }
  await db.raw('ALTER TABLE users MODIFY phone VARCHAR(32) NOT NULL');
}
