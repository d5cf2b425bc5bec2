/**
 * The attacker of the "under attack" row, a process of its own (its CPU counted apart); raw
 * sockets: `halfOpen` slowloris connections (a request line and one header, then a header line
 * every few seconds, reopened when closed), and `rate` bodies a second of exactly 16 KiB (the
 * limit), JSON objects full of small keys (the costliest to parse per byte), POSTed to
 * loginByOpenid over 4 keep-alive connections, each waiting for its answer. With `<connections>
 * <token> <file>`, the bodies are avatar uploads of the file (multipart) by the token's user.
 * It prints READY once under way; on SIGTERM, `FACTS {…}` (bodies sent, owed but not sent,
 * answered by HTTP status, reconnects, half-open connections alive), then exits.
 *
 *   node --import tsx bench/attack.ts <url> <halfOpen> <rate> [<connections> <token> <file>]
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';

const [url, halfOpen, rate] = [new URL(process.argv[2]!), Number(process.argv[3]), Number(process.argv[4])];
const [port, host, login] = [Number(url.port), url.hostname, '/service/user/loginByOpenid'];
const [connections = '4', token, file] = process.argv.slice(5);

// `{"openid":"bench_0","k0":0,"k1":0,…}` padded with spaces to exactly 16 KiB.
let json = '{"openid":"bench_0"';
for (let i = 0; json.length + `,"k${i}":0`.length + 1 <= 16384; i++) json += `,"k${i}":0`;
const part = '--b0\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n';
const [path, type, body] = token
  ? [
      '/service/user/avatar',
      `multipart/form-data; boundary=b0\r\nAuthorization: Bearer ${token}`,
      Buffer.concat([Buffer.from(part), readFileSync(file!), Buffer.from('\r\n--b0--\r\n')]),
    ]
  : [login, 'application/json', Buffer.from(`${json}}`.padEnd(16384, ' '))];
const head = `POST ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nContent-Type: ${type}\r\n`;
const request = Buffer.concat([Buffer.from(`${head}Content-Length: ${body.length}\r\n\r\n`), body]);

const stats: Record<string, number> = { sent: 0, late: 0, reconnects: 0, halfOpenAlive: 0 };
let stopping = false;
/** A connection that is opened again (by `reopen`) when the server closes it. */
function opened(reopen: () => void): Socket {
  const socket = connect(port, host).setNoDelay(true);
  socket.on('error', () => undefined);
  socket.once('close', () => {
    if (stopping) return;
    stats.reconnects += 1;
    setTimeout(reopen, 100);
  });
  return socket;
}

// --- half-open connections ---------------------------------------------------------------
const slow = new Set<Socket>();
let allOpen: () => void;
const opening = new Promise<void>((resolve) => (allOpen = resolve));
function openSlow(): void {
  const s = opened(openSlow);
  s.once('connect', () => {
    slow.add(s);
    s.write(`POST ${login} HTTP/1.1\r\nHost: ${host}\r\n`);
    if (slow.size >= halfOpen) allOpen();
  });
  s.once('close', () => slow.delete(s));
}
for (let i = 0; i < halfOpen; i++) openSlow();
if (halfOpen === 0) allOpen!();
const drip = setInterval(() => {
  for (const s of slow) s.write(`X-Wait-${Math.floor(Math.random() * 1e6)}: 1\r\n`);
}, 5000);

// --- maximum-size bodies -----------------------------------------------------------------
const senders: { socket: Socket; busy: boolean; buf: Buffer }[] = [];
function openSender(i: number): void {
  const sender = { socket: opened(() => openSender(i)), busy: false, buf: Buffer.alloc(0) };
  senders[i] = sender;
  sender.socket.on('data', (chunk: Buffer) => {
    sender.buf = Buffer.concat([sender.buf, chunk]);
    // One answer at a time: status line, headers, then Content-Length bytes.
    const end = sender.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = sender.buf.subarray(0, end).toString('latin1');
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (sender.buf.length < end + 4 + length) return;
    const status = `HTTP ${head.slice(9, 12)}`;
    stats[status] = (stats[status] ?? 0) + 1;
    sender.buf = sender.buf.subarray(end + 4 + length);
    sender.busy = false;
  });
  sender.socket.once('close', () => (sender.busy = true));
}
for (let i = 0; i < Number(connections); i++) openSender(i);

// Paced from the start: every 10 ms, as many bodies as the rate owes go to idle connections;
// a body owed while every connection still waits is counted late and not sent.
let owed = 0;
let pace: NodeJS.Timeout | undefined;
void Promise.race([opening, new Promise((resolve) => setTimeout(resolve, 5000))]).then(() => {
  process.stdout.write('READY\n');
  const started = performance.now();
  pace = setInterval(() => {
    const due = Math.floor(((performance.now() - started) / 1000) * rate);
    for (; owed < due; owed++) {
      const idle = senders.find((s) => !s.busy && !s.socket.connecting && s.socket.writable);
      if (!idle) {
        stats.late += 1;
        continue;
      }
      idle.busy = true;
      idle.socket.write(request);
      stats.sent += 1;
    }
  }, 10);
});

process.once('SIGTERM', () => {
  stopping = true;
  clearInterval(pace);
  clearInterval(drip);
  stats.halfOpenAlive = slow.size;
  process.stdout.write(`FACTS ${JSON.stringify(stats)}\n`, () => {
    for (const s of [...slow, ...senders.map((x) => x.socket)]) s.destroy();
    process.exit(0);
  });
});
