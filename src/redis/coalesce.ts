import { Cluster, type Redis } from 'ioredis';

type Stream = Redis['stream'];

/**
 * Commands to Redis leave in one write per event-loop turn instead of one write each.
 *
 * Each write to a socket is a system call that wakes Redis, and on a machine whose cores the
 * service shares with Redis and MySQL that wake-up often preempts the service. ioredis can
 * batch with auto-pipelining, but it resolves a batch's commands only when all of them (and the
 * batch before) have answered, which kept every request's command and reply alive long enough
 * to be promoted to the old space (see client.ts). Here only the writes are held: the first
 * command of a turn corks the connection, setImmediate (after this turn's I/O callbacks)
 * uncorks it, and every reply is handed back as soon as it arrives.
 *
 * `stream` is public in ioredis's types; each connection (a reconnect, a cluster node) gets
 * its own socket, wrapped when it connects.
 */
export function coalesceWrites(client: Redis | Cluster): void {
  if (client instanceof Cluster) client.on('+node', (node: Redis) => coalesceNode(node));
  else coalesceNode(client);
}

function coalesceNode(redis: Redis): void {
  redis.on('connect', () => corkPerTurn(redis.stream));
}

const wrapped = new WeakSet<Stream>();

function corkPerTurn(stream: Stream): void {
  if (wrapped.has(stream)) return;
  wrapped.add(stream);
  let corked = false;
  const uncork = () => {
    corked = false;
    stream.uncork();
  };
  const write = stream.write;
  stream.write = function (this: Stream, ...args: Parameters<Stream['write']>) {
    if (!corked) {
      corked = true;
      stream.cork();
      setImmediate(uncork);
    }
    return write.apply(this, args);
  } as Stream['write'];
}
