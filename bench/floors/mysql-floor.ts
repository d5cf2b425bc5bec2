/**
 * The MySQL floor of the uncached loginByOpenid path: a bare node:http server with a mysql2
 * pool of the service's size (DB_POOL_MAX) that reads and JSON.parses the same body and runs
 * the same indexed SELECT as src/users/repository.ts findByOpenid, answering the row as JSON
 * in the service's envelope. No knex, no Redis, no framework.
 */
import mysql from 'mysql2';
import { loadConfig } from '../../src/config';
import { mysqlStore, NOT_FOUND, openidServer, PREFIX, runFloor, floorPool } from './openid-server';

const config = loadConfig();
const pool = floorPool(config);
const SQL =
  'SELECT id, openid, nick_name, avatar, gender, phone, version, ctime, mtime FROM users WHERE openid = ? LIMIT 2';

const FAILED = '{"code":-2,"msg":"database error","data":null}';

const server = openidServer((openid, send) => {
  pool.query(SQL, [openid], (err, rows) => {
    if (err) return send(FAILED);
    const list = rows as mysql.RowDataPacket[];
    if (list.length !== 1) return send(NOT_FOUND);
    send(`${PREFIX}${JSON.stringify(list[0])}}`);
  });
});

runFloor(server, config, mysqlStore(pool, 'mysql floor'));
