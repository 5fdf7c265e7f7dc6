/**
 * `meshid proxy-init`: the pod's nat rules for transparent mode (see docs/transparent.md). The
 * injector runs it as an init container; `--dry-run` prints what it would write.
 */
import { loadConfig } from '../core/index.js';
import { processLogger, startCrypto } from './runtime.js';
import { proxyInit } from './proxy-init/run.js';

/** `meshid proxy-init` */
export async function runProxyInit(argv: string[]): Promise<number> {
  const { config } = loadConfig('proxy-init', { argv, env: process.env });
  startCrypto(config);
  const logger = processLogger(config, { service: 'proxy-init' });
  const result = await proxyInit(config, logger);
  if (result.backend === 'dry-run') {
    for (const { family, input } of result.applied) {
      process.stdout.write(
        `# ${family === 4 ? 'iptables' : 'ip6tables'}-restore --noflush (a fresh pod: no meshid rules yet)\n${input}`,
      );
    }
  }
  return 0;
}
