import type { Knex } from 'knex';

/**
 * What stays of a deleted account (POST deleteAccount, or WeChat's user_authorization_cancellation):
 * its former user_id, why and when, so that an operator can answer when and why an account was
 * deleted. Nothing personal: no openid, unionid, nickname, avatar or phone. No foreign key, since
 * the users row is gone; several rows for one user_id cannot happen (ids are never reused).
 */
export async function up(db: Knex): Promise<void> {
  await db.schema.createTable('account_deletions', (t) => {
    t.charset('utf8mb4');
    t.collate('utf8mb4_unicode_ci');
    t.bigIncrements('id').primary();
    t.bigInteger('user_id').unsigned().notNullable().unique('account_deletions_user_id_unique');
    t.enum('reason', ['user', 'wechat_cancellation']).notNullable();
    t.dateTime('deleted_at', { precision: 0 }).notNullable().defaultTo(db.raw('CURRENT_TIMESTAMP'));
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.dropTable('account_deletions');
}
