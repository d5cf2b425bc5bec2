import type { Knex } from 'knex';

export async function up(db: Knex): Promise<void> {
  await db.schema.createTable('users', (t) => {
    t.charset('utf8mb4');
    t.collate('utf8mb4_unicode_ci');
    t.increments('id').primary();
    // Binary collation: WeChat openids are case-sensitive, two of them may differ only in case.
    t.string('openid', 64).notNullable().collate('utf8mb4_bin').unique('users_openid_unique');
    t.string('nick_name', 64).notNullable();
    t.string('avatar', 512).notNullable();
    t.tinyint('gender').unsigned().notNullable();
    t.string('phone', 32).notNullable();
    // Bumped by every update; the cache refuses to store a row older than one it has seen.
    t.integer('version').unsigned().notNullable().defaultTo(1);
    t.dateTime('ctime', { precision: 0 }).notNullable().defaultTo(db.raw('CURRENT_TIMESTAMP'));
    t.dateTime('mtime', { precision: 0 }).notNullable().defaultTo(db.raw('CURRENT_TIMESTAMP'));
  });
}

export async function down(db: Knex): Promise<void> {
  await db.schema.dropTable('users');
}
