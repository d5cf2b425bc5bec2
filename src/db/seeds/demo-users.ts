// `npm run seed`: a few demo users for a development database (knex seed:run).
import type { Knex } from 'knex';

export const DEMO_USERS = [
  {
    openid: 'demo-openid-1',
    nick_name: '张三',
    avatar: 'https://example.com/media/avatar/1.jpg',
    gender: 1,
    phone: '12312312312',
  },
  {
    openid: 'demo-openid-2',
    nick_name: '李四🎉',
    avatar: 'https://example.com/media/avatar/2.jpg',
    gender: 0,
    phone: '13333333333',
  },
  {
    openid: 'demo-openid-3',
    nick_name: 'Wang Wu',
    avatar: 'https://example.com/media/avatar/3.jpg',
    gender: 1,
    phone: 'wangwu@example.com',
  },
];

/**
 * Inserts the demo users whose openid is not taken; never changes an existing row, so it is
 * safe to run again and cannot leave a cached profile stale behind the service's back.
 */
export async function seed(db: Knex): Promise<void> {
  await db('users').insert(DEMO_USERS).onConflict('openid').ignore();
}
