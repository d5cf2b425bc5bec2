import { expect } from 'chai';
import { createKnex } from '../../src/db/knex';
import { testConfig } from '../helpers/env';

describe('database connection settings', () => {
  it("keeps bound values (a phone number, say) out of a failed query's error message", async () => {
    const db = createKnex(testConfig().db);
    try {
      const phone = '13912345678';
      let message = '';
      try {
        await db.raw('INSERT INTO no_such_table (phone) VALUES (?)', [phone]);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).to.match(/no_such_table/);
      expect(message).to.not.include(phone);
    } finally {
      await db.destroy();
    }
  });
});
