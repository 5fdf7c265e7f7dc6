/**
 * What `meshid <command> --help` and `meshid help <command>` print: the usage lines (with the
 * subcommands of the commands that have them) and every setting with its flag, its `MESHID_*`
 * variable, what it does and its default. Light on purpose: no component is loaded to print help.
 */
import { describeSettings } from '../core/index.js';
import type { CommandName } from '../core/index.js';

/**
 * The subcommands of `meshid trust`, with what each does: the usage its `--help` and its errors
 * print.
 */
export const TRUST_USAGE = `Usage:
  meshid trust validate FILE                          parse a bundle: its anchors, or each bad certificate named
  meshid trust manifests [--trust-manager]            the cert-manager chain (and a trust-manager Bundle) as YAML
  meshid trust rotate   [--dir D | --kubeconfig F]    start or continue a root rotation (stage, propagate, switch, drain, retire)
  meshid trust status   [--dir D | --kubeconfig F]    where a rotation stands
  meshid trust pause|resume [--dir D | --kubeconfig F]  hold a rotation where it is, or let it go on
  meshid trust rollback [--dir D | --kubeconfig F]    undo a rotation that has not switched yet
  meshid trust sync --kubeconfig F                    keep the anchors ConfigMap and drive rotations (a controller)
`;

/** Usage lines for commands that take more than flags. */
const USAGE: Partial<Record<CommandName, string>> = {
  trust: TRUST_USAGE,
  identity: `Usage:
  meshid identity FILE                a PEM certificate (chain) on disk
  meshid identity --secret NS/NAME    a kubernetes.io/tls Secret (with --kubeconfig)
  meshid identity --proxy ADMIN_ADDR  the certificate a running proxy holds (its admin /identity)
`,
};

/**
 * The `--help` text of one command.
 */
export function commandHelp(command: CommandName, summary: string): string {
  const lines = describeSettings(command).map((s) => {
    const given =
      s.default === undefined || s.default === '' || (s.kind === 'boolean' && s.default === 'false')
        ? ''
        : `, default ${s.default}`;
    const choices =
      s.choices === undefined || s.help.includes(s.choices[0]!)
        ? ''
        : ` (one of ${s.choices.join(', ')})`;
    return `  ${s.flag} (${s.env})${given}\n      ${s.help}${choices}`;
  });
  const usage = USAGE[command] ?? `Usage:\n  meshid ${command} [flags]\n`;
  return (
    `meshid ${command}: ${summary}\n\n${usage}\n` +
    `Flags (each also a MESHID_* environment variable, and a camelCase key in a --config file; flags win over variables, variables over the file):\n` +
    `${lines.join('\n')}\n`
  );
}
