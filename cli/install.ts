/**
 * `meshid install`: prints the YAML of a complete in-cluster install of the identity CA, for
 * `kubectl apply -f -`. Everything is checked before anything is printed: the configuration,
 * the trust-anchor bundle, and every object against its Kubernetes schema.
 */
import { readFileSync } from 'node:fs';
import {
  MeshidError,
  isMeshidError,
  loadConfig,
  parseAnchors,
  systemClock,
} from '../core/index.js';
import type { ConfigSources, InstallConfig } from '../core/index.js';
import { startCrypto } from './runtime.js';
import { buildInstallObjects } from './install/manifest.js';
import { manifestYaml } from './install/yaml.js';

/** Where `renderInstall` gets its inputs; tests pass their own. */
interface InstallSources extends ConfigSources {
  /** Milliseconds since the epoch: the anchors must not all have expired by then. */
  readonly now: number;
}

/**
 * Loads the install settings, validates the trust anchors (when given) and returns the install
 * as a multi-document YAML string. Throws a MeshidError (ERR_CONFIG_INVALID,
 * ERR_ANCHORS_INVALID) instead of returning anything partial.
 */
export function renderInstall(sources: InstallSources): string {
  const { config } = loadConfig('install', sources);
  const trustAnchorsPem =
    config.trustAnchors === undefined
      ? undefined
      : readTrustAnchors(config.trustAnchors, sources.readFile, sources.now, config.fips);
  return manifestYaml(
    buildInstallObjects(config, { trustAnchorsPem }),
    'Rendered by `meshid install`; apply with `kubectl apply -f -`. See docs/install.md.',
  );
}

function readTrustAnchors(
  path: string,
  readFile: ((path: string) => string) | undefined,
  now: number,
  fips: boolean,
): string {
  let pem: string;
  try {
    pem = (readFile ?? ((p: string) => readFileSync(p, 'utf8')))(path);
  } catch (err) {
    throw new MeshidError(
      'ERR_ANCHORS_INVALID',
      `--trust-anchors ${path}: cannot read the file: ${(err as Error).message}`,
      { cause: err },
    );
  }
  try {
    parseAnchors(pem, { now, fips });
  } catch (err) {
    if (!isMeshidError(err)) throw err;
    throw new MeshidError(err.code, `--trust-anchors ${path}: ${err.message}`, { cause: err });
  }
  return pem;
}

/**
 * Image references the project has published. None yet: the default reference is where releases
 * will go, so an install that relies on it would render pods that can never pull.
 */
const PUBLISHED_IMAGES: readonly string[] = [];

/**
 * The image an install renders, and what to tell the user about it (one line for stderr).
 * Refuses the default reference while it is unpublished, unless the image was chosen (`--image`,
 * `MESHID_IMAGE`, or `image` in the `--config` file).
 *
 * @throws MeshidError ERR_CONFIG_INVALID naming `--image` and how to build and push one.
 */
function installImage(
  config: Pick<InstallConfig, 'image' | 'controlPlaneNamespace' | 'webhooks'>,
  given: ReadonlySet<string>,
): string {
  const chosen = given.has('image');
  if (!chosen && !PUBLISHED_IMAGES.includes(config.image)) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      `--image: no image given, and the default ${config.image} has not been published; build the image (npm run image), push it to a registry your cluster pulls from, and pass --image REGISTRY/meshid:TAG (or MESHID_IMAGE); see docs/install.md#the-image`,
    );
  }
  const runs = config.webhooks ? 'every Deployment and the injected proxies' : 'every Deployment';
  const pin = config.image.includes('@sha256:')
    ? ''
    : ' (not pinned by digest: REF@sha256:… makes every node run the same build)';
  return `meshid install: rendering image ${config.image} for ${runs} in namespace ${config.controlPlaneNamespace}${pin}`;
}

/** `meshid install` */
export async function runInstall(argv: string[]): Promise<number> {
  const { config, given } = loadConfig('install', { argv, env: process.env });
  startCrypto(config);
  const yaml = renderInstall({ argv, env: process.env, now: systemClock.now() });
  const said = installImage(config, given);
  // The install is rendered offline; what it meets in the cluster is check --pre's to say.
  process.stderr.write(
    `${said}\nmeshid install: before applying, \`meshid check --pre --namespace ${config.controlPlaneNamespace}\` says whether Linkerd or meshid already runs there and what applying does\n`,
  );
  // One write of the whole stream, and only once all of it rendered.
  await new Promise<void>((resolve, reject) =>
    process.stdout.write(yaml, (err) => (err ? reject(err) : resolve())),
  );
  return 0;
}
