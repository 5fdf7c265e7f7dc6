/**
 * "Pods" as Linux network namespaces, for the transparent-mode tests: each pod has its own
 * address on a veth pair to a bridge, its own loopback and its own iptables, so `meshid
 * proxy-init` can write real nat rules in it and a proxy and an app can run inside it exactly as
 * in a Kubernetes pod.
 *
 * Topology of one {@link NetnsLab}:
 *
 * ```
 *   host (the test's own namespace)        hub namespace                pod namespaces
 *   <prefix>h  10.A.B.1/24  ── veth ──  eth-host ┐
 *                                                bridge br0 ── veth ── eth0 10.A.B.2/24  (pod "client")
 *                                                           ── veth ── eth0 10.A.B.3/24  (pod "server")
 * ```
 *
 * The bridge lives in a namespace of its own, so the host's own network is not touched beyond
 * one veth end with a private address: processes in the host namespace (the Kubernetes API test
 * double, the CA, the destination service) listen on {@link NetnsLab.hostIp} (or 0.0.0.0) and
 * every pod reaches them; pods reach each other directly; each pod's default route goes via the
 * host address, so a connection to an address no pod has (a Service's ClusterIP) still leaves
 * the pod's routing and meets its nat rules. IPv6 unique-local addresses are set beside the IPv4
 * ones (without duplicate-address detection, so they are usable at once).
 *
 * Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip` (iproute2). Everything made is named
 * `mi<id>…`/`meshid-<pid>-<id>-…` and removed by {@link NetnsLab.destroy}, by a process-exit
 * hook if a test forgets, and at the next {@link NetnsLab.create} if the process was killed
 * (namespaces whose pid is gone are swept).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';

/** What a finished command left: its exit code (null when killed by a signal) and output. */
export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** How to run a command in a pod. */
export interface PodExecOptions {
  /** Run as this UID (and GID), e.g. the proxy's 2102 so the nat rules exempt it. Default root. */
  readonly uid?: number;
  /** Environment; default the test's own. */
  readonly env?: NodeJS.ProcessEnv;
  /** Working directory; default the test's own. */
  readonly cwd?: string;
  /** Standard input given to {@link NetnsPod.run}. */
  readonly input?: string;
  /** Bound on {@link NetnsPod.run}, ms (default 30 s); the command is killed past it. */
  readonly timeoutMs?: number;
}

const NETNS_DIR = '/var/run/netns';
const PREFIX = 'meshid-';

function ip(args: readonly string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Runs a command to its end and collects its output (never rejects on a non-zero exit). */
export function runCommand(
  file: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        env: options.env ?? process.env,
        cwd: options.cwd,
        timeout: options.timeoutMs ?? 30_000,
        maxBuffer: 16 * 1024 * 1024,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
        if (err !== null && typeof err.code === 'string') {
          reject(new Error(`${file} could not be run: ${err.message}`));
          return;
        }
        resolve({ code, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
  });
}

/** The argv prefix that runs a command in a namespace, as `uid` when given. */
function inNamespace(ns: string, uid: number | undefined): string[] {
  const prefix = ['netns', 'exec', ns];
  return uid === undefined
    ? prefix
    : [...prefix, 'setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--'];
}

/**
 * One pod: a network namespace with `eth0` on the lab's bridge and `lo` up.
 *
 * @example
 * ```ts
 * const server = await lab.addPod('server');
 * const app = server.spawn(process.execPath, ['app.js'], { uid: 1000 });
 * const rules = await server.run('iptables-save', ['-t', 'nat']);
 * ```
 */
export class NetnsPod {
  /** The pod's name in the test ("client"). */
  readonly name: string;
  /** The network namespace's name (`ip netns exec <ns> …`). */
  readonly ns: string;
  /** The pod's IPv4 address on the bridge. */
  readonly ip: string;
  /** The pod's IPv6 address on the bridge. */
  readonly ip6: string;
  readonly #lab: NetnsLab;

  /** @internal made by {@link NetnsLab.addPod}. */
  constructor(lab: NetnsLab, name: string, ns: string, ip4: string, ip6: string) {
    this.#lab = lab;
    this.name = name;
    this.ns = ns;
    this.ip = ip4;
    this.ip6 = ip6;
  }

  /**
   * The argv that runs a command in the pod (as `uid` when given), for helpers that take a
   * command prefix, such as `startMeshid`'s `prefix` option.
   *
   * @example
   * ```ts
   * const proxy = await startMeshid('proxy', args, env, { prefix: pod.prefix(2102) });
   * ```
   */
  prefix(uid?: number): string[] {
    return ['ip', ...inNamespace(this.ns, uid)];
  }

  /**
   * Runs a command in the pod to its end (as `ip netns exec <ns> file args…`).
   *
   * @example
   * ```ts
   * const { code, stdout } = await pod.run('iptables-save', ['-t', 'nat']);
   * ```
   */
  run(file: string, args: readonly string[], options: PodExecOptions = {}): Promise<RunResult> {
    return runCommand('ip', [...inNamespace(this.ns, options.uid), file, ...args], options);
  }

  /**
   * Starts a long-running command in the pod (a proxy, an app). The lab kills it on
   * {@link NetnsLab.destroy} if the test did not. `ip netns exec` execs the command, so the
   * child's pid is the command's own.
   *
   * @example
   * ```ts
   * const proxy = pod.spawn(process.execPath, ['bin/meshid.js', 'proxy', ...], { uid: 2102 });
   * ```
   */
  spawn(
    file: string,
    args: readonly string[],
    options: PodExecOptions & { stdio?: SpawnOptions['stdio'] } = {},
  ): ChildProcess {
    const child = spawn('ip', [...inNamespace(this.ns, options.uid), file, ...args], {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'],
    });
    this.#lab.track(child);
    return child;
  }
}

/** Settings of {@link NetnsLab.create}. */
export interface NetnsLabOptions {
  /** Shown in the namespaces' names (a-z0-9, ≤ 8 characters), to tell labs apart. Default `lab`. */
  readonly tag?: string;
}

/**
 * A set of pods on one bridge, plus an address in the test's own namespace that they reach.
 *
 * @example
 * ```ts
 * const lab = await NetnsLab.create();
 * try {
 *   const client = await lab.addPod('client');
 *   const server = await lab.addPod('server');
 *   server.spawn('nc', ['-l', '-p', '8080']);
 *   await client.run('curl', [`http://${server.ip}:8080/`]);
 *   // a Kubernetes API test double listening on lab.hostIp is reachable from both pods
 * } finally {
 *   await lab.destroy();
 * }
 * ```
 */
export class NetnsLab {
  /** The test's own namespace's address on the bridge, reachable from every pod. */
  readonly hostIp: string;
  /** The same, IPv6. */
  readonly hostIp6: string;
  readonly #id: string;
  readonly #tag: string;
  readonly #subnet: { a: number; b: number };
  readonly #pods: NetnsPod[] = [];
  readonly #children = new Set<ChildProcess>();
  readonly #exitHook = (): void => this.#removeSync();
  #destroyed = false;

  private constructor(id: string, tag: string, subnet: { a: number; b: number }) {
    this.#id = id;
    this.#tag = tag;
    this.#subnet = subnet;
    this.hostIp = `10.${subnet.a}.${subnet.b}.1`;
    this.hostIp6 = `fd00:${subnet.a}:${subnet.b}::1`;
  }

  /**
   * Makes the hub namespace with its bridge and the host's veth end. Sweeps what killed test
   * processes left behind first.
   *
   * @throws Error naming what is missing when not root or `ip` is not installed.
   */
  static async create(options: NetnsLabOptions = {}): Promise<NetnsLab> {
    sweepStale();
    const tag = options.tag ?? 'lab';
    if (!/^[a-z0-9]{1,8}$/.test(tag)) throw new Error(`NetnsLab tag "${tag}" must be a-z0-9, ≤ 8`);
    const lab = new NetnsLab(randomBytes(3).toString('hex'), tag, freeSubnet());
    process.once('exit', lab.#exitHook);
    try {
      lab.#makeHub();
    } catch (err) {
      lab.#removeSync();
      throw new Error(
        `could not set up network namespaces (needs root and iproute2's ip): ${(err as Error & { stderr?: Buffer }).stderr?.toString().trim() ?? (err as Error).message}`,
        { cause: err },
      );
    }
    return Promise.resolve(lab);
  }

  get #hub(): string {
    return `${PREFIX}${process.pid}-${this.#id}-${this.#tag}-hub`;
  }

  #makeHub(): void {
    const hub = this.#hub;
    const hostEnd = `mi${this.#id}h`;
    ip(['netns', 'add', hub]);
    ip(['-n', hub, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', hub, 'link', 'set', 'br0', 'up']);
    ip(['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth-host', 'netns', hub]);
    ip(['-n', hub, 'link', 'set', 'eth-host', 'master', 'br0', 'up']);
    ip(['addr', 'add', `${this.hostIp}/24`, 'dev', hostEnd]);
    ip(['-6', 'addr', 'add', `${this.hostIp6}/64`, 'dev', hostEnd, 'nodad']);
    ip(['link', 'set', hostEnd, 'up']);
  }

  /**
   * Adds a pod: a namespace with `lo` up and `eth0` on the bridge at the next address, its
   * default routes via the host address.
   */
  addPod(name: string): Promise<NetnsPod> {
    if (this.#destroyed) throw new Error('NetnsLab already destroyed');
    if (!/^[a-z0-9]{1,12}$/.test(name)) throw new Error(`pod name "${name}" must be a-z0-9, ≤ 12`);
    if (this.#pods.some((p) => p.name === name)) throw new Error(`pod "${name}" exists already`);
    const n = this.#pods.length + 2;
    if (n > 254) throw new Error('a NetnsLab holds at most 253 pods');
    const ns = `${PREFIX}${process.pid}-${this.#id}-${this.#tag}-${name}`;
    const hubEnd = `mi${this.#id}p${n}`;
    const { a, b } = this.#subnet;
    const ip4 = `10.${a}.${b}.${n}`;
    const ip6 = `fd00:${a}:${b}::${n.toString(16)}`;
    ip(['netns', 'add', ns]);
    const pod = new NetnsPod(this, name, ns, ip4, ip6);
    this.#pods.push(pod);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    ip([
      '-n',
      this.#hub,
      'link',
      'add',
      hubEnd,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      ns,
    ]);
    ip(['-n', this.#hub, 'link', 'set', hubEnd, 'master', 'br0', 'up']);
    ip(['-n', ns, 'addr', 'add', `${ip4}/24`, 'dev', 'eth0']);
    ip(['-n', ns, '-6', 'addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad']);
    ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
    ip(['-n', ns, 'route', 'add', 'default', 'via', this.hostIp]);
    ip(['-n', ns, '-6', 'route', 'add', 'default', 'via', this.hostIp6]);
    return Promise.resolve(pod);
  }

  /** The pods added so far. */
  get pods(): readonly NetnsPod[] {
    return this.#pods;
  }

  /** @internal: a child process to kill on destroy. */
  track(child: ChildProcess): void {
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
  }

  /**
   * Kills what was spawned in the pods (SIGTERM, then SIGKILL after `graceMs`), then removes
   * every namespace and veth of the lab. Idempotent.
   */
  async destroy(graceMs = 2000): Promise<void> {
    if (this.#destroyed) return;
    const running = [...this.#children].filter((c) => c.exitCode === null && c.signalCode === null);
    await Promise.all(
      running.map(
        (c) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => c.kill('SIGKILL'), graceMs);
            c.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            c.kill('SIGTERM');
          }),
      ),
    );
    this.#removeSync();
  }

  #removeSync(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    process.off('exit', this.#exitHook);
    for (const c of this.#children) c.kill('SIGKILL');
    for (const ns of [...this.#pods.map((p) => p.ns), this.#hub]) removeNamespace(ns);
    // Its peer went with the hub namespace; this is for a hub that was never made.
    try {
      ip(['link', 'del', `mi${this.#id}h`]);
    } catch {
      // already gone
    }
  }
}

function removeNamespace(ns: string): void {
  try {
    ip(['netns', 'del', ns]);
  } catch {
    // already gone
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes namespaces (and so their veths) left by test processes that no longer run. */
function sweepStale(): void {
  let names: string[];
  try {
    names = readdirSync(NETNS_DIR);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^meshid-(\d+)-/.exec(name);
    if (m !== null && !alive(Number(m[1]))) removeNamespace(name);
  }
}

/** A 10.A.B.0/24 that no interface of the host namespace is on (other labs run in parallel). */
function freeSubnet(): { a: number; b: number } {
  const used = execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' });
  for (let i = 0; i < 64; i++) {
    const r = randomBytes(2);
    const a = 200 + ((r[0] ?? 0) % 50);
    const b = r[1] ?? 0;
    if (!used.includes(` 10.${a}.${b}.`)) return { a, b };
  }
  throw new Error('no free 10.200-249.x.0/24 subnet for a NetnsLab');
}
