import type { Knex } from 'knex';

/**
 * WeChat's unionid: one person across the mini-programs and official accounts of one open
 * platform account. Nullable (WeChat sends it only when the app is bound to an open platform
 * account), indexed so that a sibling service can find a user by it.
 */
export async function up(db: Knex): Promise<void> {
  await db.schema.alterTable('users', (t) => {
    t.string('unionid', 64).nullable().collate('utf8mb4_bin').after('openid');
    t.index(['unionid'], 'users_unionid_index');
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.alterTable('users', (t) => {
    t.dropIndex(['unionid'], 'users_unionid_index');
    t.dropColumn('unionid');
  });
}
