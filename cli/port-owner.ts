/**
 * Which process listens on a TCP port, best effort, for the "address already in use" error: the
 * kernel's socket tables (/proc/net/tcp, /proc/net/tcp6) give the listening socket's inode, and
 * the process holding a file descriptor on that socket is its owner. Linux only; anything that
 * cannot be read (another user's /proc/PID/fd, another network namespace, another OS) gives no
 * answer rather than a wrong one.
 */
import { readFile, readdir, readlink } from 'node:fs/promises';

/** A process found holding a listening socket. */
interface PortOwner {
  readonly pid: number;
  /** Its command line, arguments joined by spaces and shortened. */
  readonly command: string;
}

const LISTEN_STATE = '0A';
const MAX_COMMAND = 120;

/**
 * The inodes of the sockets listening on `port` in one /proc/net/tcp{,6} table's text.
 */
export function listeningInodes(table: string, port: number): string[] {
  const wanted = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes: string[] = [];
  for (const line of table.split('\n').slice(1)) {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const localPort = f[1]!.split(':')[1];
    if (localPort === wanted && f[3] === LISTEN_STATE && f[9] !== '0') inodes.push(f[9]!);
  }
  return inodes;
}

/**
 * The process listening on TCP `port` of this host's network namespace, or undefined when it
 * cannot be told.
 */
export async function findPortOwner(port: number, proc = '/proc'): Promise<PortOwner | undefined> {
  try {
    const inodes = new Set<string>();
    for (const table of ['tcp', 'tcp6']) {
      const text = await readFile(`${proc}/net/${table}`, 'utf8').catch(() => '');
      for (const inode of listeningInodes(text, port)) inodes.add(inode);
    }
    if (inodes.size === 0) return undefined;
    const targets = new Set([...inodes].map((i) => `socket:[${i}]`));
    const pids = (await readdir(proc)).filter((n) => /^\d+$/.test(n));
    for (const pid of pids) {
      const fds = await readdir(`${proc}/${pid}/fd`).catch(() => [] as string[]);
      for (const fd of fds) {
        const link = await readlink(`${proc}/${pid}/fd/${fd}`).catch(() => '');
        if (!targets.has(link)) continue;
        const cmdline = await readFile(`${proc}/${pid}/cmdline`, 'utf8').catch(() => '');
        const command = cmdline
          .split('\0')
          .filter((a) => a !== '')
          .join(' ');
        return {
          pid: Number(pid),
          command: command.length > MAX_COMMAND ? `${command.slice(0, MAX_COMMAND - 1)}…` : command,
        };
      }
    }
  } catch {
    // Best effort: no answer.
  }
  return undefined;
}
