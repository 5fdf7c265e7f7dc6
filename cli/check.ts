/**
 * `meshid check [--kubeconfig F] [--context C] | [--dir D] [--output json]`: a pre-flight checklist of the mesh's
 * identity plumbing. Exit status 1 when any check fails (×), 0 otherwise (warnings included),
 * 2 for a bad configuration.
 */
import { MeshidError, loadConfig, openKubeClient, systemClock } from '../core/index.js';
import type { CheckConfig, Clock } from '../core/index.js';
import { checkCluster } from './check/cluster.js';
import { checkLocal } from './check/local.js';
import { checkPre } from './check/pre.js';
import { buildReport } from './check/model.js';
import type { CheckReport } from './check/model.js';
import { renderReport } from './check/render.js';
import { ProgressLine, styles, useColor } from './term.js';
import { startCrypto } from './runtime.js';

/**
 * Runs the checks of a configuration; resolves with the report. What is checked, as kubectl
 * finds its cluster: `--kubeconfig` (and `--context`) when given; else `--dir` when given; else
 * the kubeconfig of `KUBECONFIG` or `~/.kube/config`, at its current context (or `--context`);
 * only when there is none, the local state folder (`.meshid`). The report's target names the
 * context and API server, or the folder, and for the folder why no cluster was checked.
 */
export async function runChecks(
  config: CheckConfig,
  deps: {
    clock: Clock;
    progress: (what: string) => void;
    /** Where KUBECONFIG and HOME come from (default process.env). */
    env?: Readonly<Record<string, string | undefined>>;
    /** Whether `dir` was given rather than defaulted (a given folder is checked as asked). */
    dirGiven?: boolean;
  },
): Promise<CheckReport> {
  const startedAt = deps.clock.now();
  const { findKubeconfig } = await import('../core/kube/config.js');
  const found =
    config.kubeconfig === undefined && deps.dirGiven === true && !config.pre
      ? undefined
      : findKubeconfig({
          kubeconfig: config.kubeconfig,
          context: config.context,
          env: deps.env ?? process.env,
        });
  let results;
  let target;
  if (config.pre && found === undefined)
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      `--pre checks a cluster before an install, and there is no kubeconfig${deps.dirGiven === true ? ' (--dir is for the local state)' : ''}: give --kubeconfig, set KUBECONFIG, or write ~/.kube/config`,
    );
  if (found !== undefined) {
    const kube = await openKubeClient(found.kc);
    target = `context ${found.context} at ${found.server} (namespace ${config.namespace})`;
    try {
      results = config.pre
        ? await checkPre(kube, config.namespace, found.context, deps.progress)
        : await checkCluster(kube, config, startedAt, deps.progress);
    } finally {
      kube.close();
    }
  } else {
    if (config.context !== undefined)
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `--context ${config.context}: ${deps.dirGiven === true ? 'a context is for a cluster, not --dir' : 'there is no kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config)'}`,
      );
    target =
      deps.dirGiven === true
        ? config.dir
        : `${config.dir} (no kubeconfig: --kubeconfig, KUBECONFIG or ~/.kube/config checks a cluster)`;
    results = await checkLocal(config, startedAt, deps.progress);
  }
  return buildReport({
    mode: found === undefined ? 'local' : config.pre ? 'pre' : 'cluster',
    target,
    startedAt,
    finishedAt: deps.clock.now(),
    results,
  });
}

/** `meshid check` */
export async function runCheck(argv: string[]): Promise<number> {
  const { config, given } = loadConfig('check', { argv, env: process.env });
  startCrypto(config);
  const progress = new ProgressLine(process.stderr, process.env);
  let report: CheckReport;
  try {
    report = await runChecks(config, {
      clock: systemClock,
      progress: (w) => progress.update(w),
      dirGiven: given.has('dir'),
    });
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
