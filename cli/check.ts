/**
 * `meshid check [--kubeconfig F | --dir D] [--output json]`: a pre-flight checklist of the mesh's
 * identity plumbing. Exit status 1 when any check fails (×), 0 otherwise (warnings included),
 * 2 for a bad configuration.
 */
import { loadConfig, openKubeClient, systemClock } from '../core/index.js';
import type { CheckConfig, Clock } from '../core/index.js';
import { checkCluster } from './check/cluster.js';
import { checkLocal } from './check/local.js';
import { buildReport } from './check/model.js';
import type { CheckReport } from './check/model.js';
import { renderReport } from './check/render.js';
import { ProgressLine, styles, useColor } from './term.js';
import { startCrypto } from './runtime.js';

/** Runs the checks of a configuration; resolves with the report. */
export async function runChecks(
  config: CheckConfig,
  deps: { clock: Clock; progress: (what: string) => void },
): Promise<CheckReport> {
  const startedAt = deps.clock.now();
  let results;
  let target;
  if (config.kubeconfig !== undefined) {
    const { loadKubeConfig } = await import('../core/kube/config.js');
    const kube = await openKubeClient(loadKubeConfig(config.kubeconfig, process.env));
    target = `${kube.server} (namespace ${config.namespace})`;
    try {
      results = await checkCluster(kube, config, startedAt, deps.progress);
    } finally {
      kube.close();
    }
  } else {
    target = config.dir;
    results = await checkLocal(config, startedAt, deps.progress);
  }
  return buildReport({
    mode: config.kubeconfig === undefined ? 'local' : 'cluster',
    target,
    startedAt,
    finishedAt: deps.clock.now(),
    results,
  });
}

/** `meshid check` */
export async function runCheck(argv: string[]): Promise<number> {
  const { config } = loadConfig('check', { argv, env: process.env });
  startCrypto(config);
  const progress = new ProgressLine(process.stderr, process.env);
  let report: CheckReport;
  try {
    report = await runChecks(config, { clock: systemClock, progress: (w) => progress.update(w) });
  } finally {
    progress.done();
  }
  process.stdout.write(
    config.output === 'json'
      ? `${JSON.stringify(report, null, 2)}\n`
      : renderReport(report, styles(useColor(process.stdout, process.env))),
  );
  return report.success ? 0 : 1;
}
