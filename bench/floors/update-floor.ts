/**
 * The floor of `update`: a bare node:http server with a mysql2 pool of the service's size
 * (DB_POOL_MAX) that reads and JSON.parses the same body and runs the same transaction as
 * src/users/repository.ts updateProfile on one pooled connection: BEGIN, SELECT … FOR UPDATE
 * of the row, UPDATE of the field with version + 1, COMMIT. No knex, no Redis (the service
 * also tombstones the cached profile inside the transaction: one Redis round trip this floor
 * leaves out), no framework.
 */
import mysql from 'mysql2';
import { loadConfig } from '../../src/config';
import { bodyServer, mysqlStore, runFloor, floorPool } from './openid-server';

const config = loadConfig();
const pool = floorPool(config);
const LOCK = 'SELECT openid, version FROM users WHERE id = ? FOR UPDATE';
const WRITE =
  'UPDATE users SET nick_name = ?, version = version + 1, ' +
  'mtime = GREATEST(CURRENT_TIMESTAMP, mtime + INTERVAL 1 SECOND) WHERE id = ?';

const OK = '{"code":0,"msg":"success","data":null}';
const BAD = '{"code":-1,"msg":"user_id and update.nick_name are required","data":null}';
const NOT_FOUND = '{"code":-2,"msg":"no such user","data":null}';
const FAILED = '{"code":-2,"msg":"database error","data":null}';

const server = bodyServer((body, send) => {
  const { user_id: id, update } = (body ?? {}) as { user_id?: unknown; update?: { nick_name?: unknown } };
  const nick = update?.nick_name;
  if (typeof id !== 'number' || typeof nick !== 'string') return send(BAD);
  pool.getConnection((err, conn) => {
    if (err) return send(FAILED);
    const fail = () => conn.rollback(() => (conn.release(), send(FAILED)));
    conn.beginTransaction((e1) => {
      if (e1) return (conn.release(), send(FAILED));
      conn.query(LOCK, [id], (e2, rows) => {
        if (e2) return fail();
        if ((rows as mysql.RowDataPacket[]).length !== 1) return conn.rollback(() => (conn.release(), send(NOT_FOUND)));
        conn.query(WRITE, [nick, id], (e3) => {
          if (e3) return fail();
          conn.commit((e4) => {
            if (e4) return fail();
            conn.release();
            send(OK);
          });
        });
      });
    });
  });
});

runFloor(server, config, mysqlStore(pool, 'update floor'));
