import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { createConnection } from 'mysql2/promise';
import { freePort } from './redis-server';

const DEPLOY = resolve(__dirname, '../../deploy');
/** A donor's rsync run that copies the data files: without --bypass, a full SST. */
const DONOR_FULL = /Running: 'wsrep_sst_rsync --role 'donor'(?![^\n]*--bypass)/g;
const MARIADBD = existsSync('/usr/sbin/mariadbd') ? '/usr/sbin/mariadbd' : 'mariadbd';

/** What the Galera failover test needs on this machine; an empty list means it can run. */
export function galeraMissing(): string[] {
  const missing: string[] = [];
  if (!existsSync('/usr/lib/galera/libgalera_smm.so')) missing.push('galera-4');
  for (const bin of ['haproxy', 'rsync', 'mariadb-install-db', 'galera_recovery']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) missing.push(bin);
  }
  if (userInfo().uid !== 0) missing.push('root (the nodes run as the mysql user)');
  return missing;
}

interface Ports {
  sql: number;
  gcomm: number;
  ist: number;
  sst: number;
}

/**
 * One node of a TestGaleraCluster: its own data directory and option file, which the test may
 * SIGKILL and start again. A restart recovers the node's position first (Debian's
 * galera_recovery, as its systemd unit does) so it rejoins by IST from a survivor's gcache,
 * not by a full SST.
 */
export class GaleraNode {
  private proc?: ChildProcess;
  constructor(
    readonly name: string,
    readonly dir: string,
    readonly ports: Ports,
  ) {}

  get cnf(): string {
    return join(this.dir, 'my.cnf');
  }

  get errorLog(): string {
    return join(this.dir, 'error.log');
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Starts mariadbd as the mysql user and waits until it is Synced. */
  async start(extra: string[] = []): Promise<void> {
    this.proc = spawn(MARIADBD, [`--defaults-file=${this.cnf}`, ...extra], { stdio: 'ignore' });
    await this.waitSynced(90_000);
  }

  /**
   * A restart after a crash: position recovered (galera_recovery), then rejoined. `ist` says
   * whether it caught up by IST alone: the donor's rsync ran with --bypass (no state dump).
   */
  async restart(others: GaleraNode[]): Promise<{ ist: boolean }> {
    const recovery = spawnSync('galera_recovery', [`--defaults-file=${this.cnf}`], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (recovery.status !== 0) throw new Error(`galera_recovery failed: ${recovery.stderr}`);
    const position = recovery.stdout.trim();
    const fullDumps = () => others.reduce((n, o) => n + (o.log().match(DONOR_FULL) ?? []).length, 0);
    const before = { dumps: fullDumps(), log: this.log().length };
    await this.start(position ? [position] : []);
    return { ist: /IST received/.test(this.log().slice(before.log)) && fullDumps() === before.dumps };
  }

  log(): string {
    return existsSync(this.errorLog) ? readFileSync(this.errorLog, 'utf8') : '';
  }

  kill(): Promise<void> {
    const proc = this.proc;
    if (!proc || !this.running) return Promise.resolve();
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGKILL');
    this.proc = undefined;
    return exited;
  }

  /** wsrep_local_state 4 (Synced) and wsrep_ready ON: what the HAProxy check asks too. */
  async synced(): Promise<boolean> {
    const conn = await createConnection({
      host: '127.0.0.1',
      port: this.ports.sql,
      user: 'root',
      connectTimeout: 1000,
    }).catch(() => null);
    if (!conn) return false;
    try {
      const [rows] = await conn.query("SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', 'wsrep_ready')");
      const status = new Map(
        (rows as { Variable_name: string; Value: string }[]).map((r) => [r.Variable_name, r.Value]),
      );
      return status.get('wsrep_local_state') === '4' && status.get('wsrep_ready') === 'ON';
    } catch {
      return false;
    } finally {
      conn.destroy();
    }
  }

  /** The end of the error log, for a failure's message (the directory is removed after). */
  logTail(lines = 15): string {
    return this.log().trim().split('\n').slice(-lines).join('\n') || '(no log)';
  }

  /** wsrep_cluster_size and wsrep_cluster_status as this node sees them, or null if it does not answer. */
  async view(): Promise<{ size: number; primary: boolean } | null> {
    const conn = await createConnection({
      host: '127.0.0.1',
      port: this.ports.sql,
      user: 'root',
      connectTimeout: 1000,
    }).catch(() => null);
    if (!conn) return null;
    try {
      const [rows] = await conn.query(
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_size', 'wsrep_cluster_status')",
      );
      const status = new Map(
        (rows as { Variable_name: string; Value: string }[]).map((r) => [r.Variable_name, r.Value]),
      );
      return {
        size: Number(status.get('wsrep_cluster_size')),
        primary: status.get('wsrep_cluster_status') === 'Primary',
      };
    } catch {
      return null;
    } finally {
      conn.destroy();
    }
  }

  private async waitSynced(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`${this.name} exited: ${this.logTail()}`);
      if (await this.synced()) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${this.name} did not reach Synced within ${ms} ms: ${this.logTail()}`);
  }
}

/**
 * A 3-node MariaDB Galera cluster on loopback spare ports, with HAProxy in front, both run from
 * the shipped deploy/galera.cnf and deploy/haproxy.cfg (only addresses, ports and paths are
 * put in). The first node is bootstrapped from mariadb-install-db; the others join by an rsync
 * SST. The nodes run as the mysql user, as Debian runs them. The shared MariaDB on 3306 is never
 * touched: every node reads only its own option file.
 */
export class TestGaleraCluster {
  private haproxy?: ChildProcess;
  private constructor(
    readonly dir: string,
    readonly nodes: GaleraNode[],
    readonly port: number,
  ) {}

  /** Server URL through HAProxy, without a database: append `/<name>`. */
  get url(): string {
    return `mysql://root@127.0.0.1:${this.port}`;
  }

  static async create(): Promise<TestGaleraCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'user-service-galera-'));
    // The mysql user must reach its node's directory.
    chmodSync(dir, 0o755);
    const nodes: GaleraNode[] = [];
    for (let i = 1; i <= 3; i++) {
      const ports = { sql: await freePort(), gcomm: await freePort(), ist: await freePort(), sst: await freePort() };
      const nodeDir = join(dir, `db${i}`);
      mkdirSync(join(nodeDir, 'data'), { recursive: true });
      nodes.push(new GaleraNode(`db${i}`, nodeDir, ports));
    }
    const cluster = new TestGaleraCluster(dir, nodes, await freePort());
    try {
      const gcomm = nodes.map((n) => `127.0.0.1:${n.ports.gcomm}`).join(',');
      const providerOptions = /^wsrep_provider_options\s*=\s*"([^"]*)"/m.exec(
        readFileSync(join(DEPLOY, 'galera.cnf'), 'utf8'),
      )?.[1];
      if (!providerOptions) throw new Error('deploy/galera.cnf sets no wsrep_provider_options');
      for (const node of nodes) {
        writeFileSync(node.cnf, nodeCnf(node, gcomm, providerOptions));
        chownTree(node.dir);
      }
      const install = spawnSync(
        'mariadb-install-db',
        [
          `--defaults-file=${nodes[0]!.cnf}`,
          '--auth-root-authentication-method=normal',
          '--skip-test-db',
          '--skip-name-resolve',
          '--user=mysql',
        ],
        { encoding: 'utf8', timeout: 60_000 },
      );
      if (install.status !== 0) throw new Error(`mariadb-install-db failed: ${install.stderr || install.stdout}`);
      await nodes[0]!.start(['--wsrep-new-cluster']);
      const admin = await createConnection({ host: '127.0.0.1', port: nodes[0]!.ports.sql, user: 'root' });
      // The HAProxy check's user, as docs/scaling.md tells an operator to create it.
      await admin.query("CREATE USER 'haproxy_check'@'127.0.0.1'");
      await admin.end();
      // One joiner at a time: each takes a full SST, which blocks its donor meanwhile.
      await nodes[1]!.start();
      await nodes[2]!.start();
      await cluster.startHaproxy();
      return cluster;
    } catch (err) {
      await cluster.destroy();
      throw err;
    }
  }

  private async startHaproxy(): Promise<void> {
    const cfg = readFileSync(join(DEPLOY, 'haproxy.cfg'), 'utf8')
      .replace(/^(\s*stats socket )\S+/m, `$1${join(this.dir, 'haproxy.sock')}`)
      .replace(/^(\s*bind )\S+/m, `$1127.0.0.1:${this.port}`)
      .replace(/^(\s*external-check command )\S+/m, `$1${join(DEPLOY, 'galera-check')}`)
      .replace(
        /^(\s*server db(\d) )\S+/gm,
        (_, head: string, n: string) => `${head}127.0.0.1:${this.nodes[Number(n) - 1]!.ports.sql}`,
      );
    const file = join(this.dir, 'haproxy.cfg');
    writeFileSync(file, cfg);
    const check = spawnSync('haproxy', ['-c', '-f', file], { encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`haproxy -c: ${check.stdout}${check.stderr}`);
    this.haproxy = spawn('haproxy', ['-db', '-f', file], { stdio: 'ignore' });
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if ((await this.writer().catch(() => null)) !== null) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('HAProxy did not pass a connection to the cluster');
  }

  /** The node HAProxy sends a new connection to now (its wsrep_node_name). */
  async writer(): Promise<string> {
    const conn = await createConnection({ host: '127.0.0.1', port: this.port, user: 'root', connectTimeout: 1000 });
    try {
      const [rows] = await conn.query('SELECT @@wsrep_node_name AS name');
      return (rows as { name: string }[])[0]!.name;
    } finally {
      conn.destroy();
    }
  }

  node(name: string): GaleraNode {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no node ${name}`);
    return node;
  }

  /** Kills HAProxy and every node, and removes their directories. */
  async destroy(): Promise<void> {
    const proxy = this.haproxy;
    if (proxy && proxy.exitCode === null) {
      const exited = new Promise((r) => proxy.once('exit', r));
      proxy.kill('SIGKILL');
      await exited;
    }
    await Promise.all(this.nodes.map((n) => n.kill()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function nodeCnf(node: GaleraNode, gcomm: string, providerOptions: string): string {
  const { sql, gcomm: gport, ist, sst } = node.ports;
  return `!include ${join(DEPLOY, 'galera.cnf')}

[mysqld]
datadir = ${join(node.dir, 'data')}
port = ${sql}
socket = ${join(node.dir, 'sock')}
pid-file = ${join(node.dir, 'pid')}
log-error = ${node.errorLog}
bind-address = 127.0.0.1
user = mysql
skip-name-resolve
# Small: a test cluster holds a few thousand rows and must start fast.
innodb_buffer_pool_size = 16M
innodb_log_file_size = 4M
innodb_data_file_path = ibdata1:4M:autoextend
performance_schema = OFF

[galera]
wsrep_cluster_address = gcomm://${gcomm}
wsrep_node_address = 127.0.0.1:${gport}
wsrep_node_name = ${node.name}
wsrep_sst_receive_address = 127.0.0.1:${sst}
wsrep_provider_options = "${providerOptions};gmcast.listen_addr=tcp://127.0.0.1:${gport};ist.recv_addr=127.0.0.1:${ist};gcache.size=32M"
`;
}

function chownTree(path: string): void {
  const r = spawnSync('chown', ['-R', 'mysql:mysql', path]);
  if (r.status !== 0) throw new Error(`chown mysql ${path}: ${String(r.stderr)}`);
}
