import { strict as assert } from 'node:assert';
import {
  COMMAND_SETTINGS,
  loadConfig,
  parseAddress,
  flagName,
  isMeshidError,
} from '../../../core/index.js';
import type { MeshidError } from '../../../core/index.js';
import { envName } from '../../../core/config.js';

const files: Record<string, string> = {};
const readFile = (p: string): string => {
  const f = files[p];
  if (f === undefined) throw new Error(`ENOENT: ${p}`);
  return f;
};

function configError(fn: () => unknown): MeshidError {
  try {
    fn();
  } catch (err) {
    if (isMeshidError(err, 'ERR_CONFIG_INVALID')) return err;
    throw err;
  }
  assert.fail('expected ERR_CONFIG_INVALID');
}

describe('config', () => {
  it('derives flag and environment names from camelCase keys', () => {
    assert.equal(flagName('certLifetime'), 'cert-lifetime');
    assert.equal(envName('certLifetime'), 'MESHID_CERT_LIFETIME');
    assert.equal(envName('controlPlaneNamespace'), 'MESHID_CONTROL_PLANE_NAMESPACE');
  });

  it('fills the defaults of DESIGN.md for a CA run against the local state folder', () => {
    const { config } = loadConfig('ca', { argv: [], env: {} });
    assert.equal(config.trustAnchors, '.meshid/trust-anchors.pem');
    assert.equal(config.issuerDir, '.meshid/issuer');
    assert.equal(config.jwks, '.meshid/token-signing/jwks.json');
    assert.equal(config.audience, 'identity.l5d.io');
    assert.equal(config.certLifetime, 24 * 3_600_000);
    assert.equal(config.clockSkew, 20_000);
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(config.admin, { host: '127.0.0.1', port: 9990 });
    assert.equal(
      config.identityName,
      'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
    );
  });

  it('gives flags precedence over environment variables, and those over the file', () => {
    files['/c.yaml'] = 'certLifetime: 1h\nclockSkew: 5s\ntrustDomain: file.example\n';
    const { config } = loadConfig('ca', {
      argv: ['--config', '/c.yaml', '--cert-lifetime', '2h'],
      env: { MESHID_CERT_LIFETIME: '3h', MESHID_CLOCK_SKEW: '7s' },
      readFile,
    });
    assert.equal(config.certLifetime, 2 * 3_600_000);
    assert.equal(config.clockSkew, 7_000);
    assert.equal(config.trustDomain, 'file.example');
    assert.equal(
      config.identityName,
      'linkerd-identity.linkerd.serviceaccount.identity.linkerd.file.example',
    );
  });

  it('derives the CA identity from the trust domain and control-plane namespace', () => {
    const { config } = loadConfig('ca', {
      argv: ['--trust-domain', 'prod.example', '--control-plane-namespace', 'mesh'],
      env: {},
    });
    assert.equal(
      config.identityName,
      'linkerd-identity.mesh.serviceaccount.identity.mesh.prod.example',
    );
  });

  it('refuses an unknown key in the config file', () => {
    files['/bad.yaml'] = 'certLifetimee: 1h\n';
    const err = configError(() =>
      loadConfig('ca', { argv: ['--config', '/bad.yaml'], env: {}, readFile }),
    );
    assert.match(err.message, /\/bad\.yaml: certLifetimee: unknown setting/);
  });

  it('refuses an unknown MESHID_ environment variable', () => {
    const err = configError(() => loadConfig('ca', { argv: [], env: { MESHID_CERT_LIFE: '1h' } }));
    assert.match(err.message, /MESHID_CERT_LIFE: unknown MESHID_ environment variable/);
  });

  it('refuses an unknown flag', () => {
    const err = configError(() => loadConfig('ca', { argv: ['--cert-life', '1h'], env: {} }));
    assert.match(
      err.message,
      /^meshid ca: unknown flag --cert-life; did you mean --cert-lifetime\? \('meshid ca --help' lists every flag\)$/,
    );
  });

  it('suggests the setting a mistyped config key or MESHID_ variable meant', () => {
    files['/typo.yaml'] = 'certLifetme: 1h\n';
    const err = configError(() =>
      loadConfig('ca', {
        argv: ['--config', '/typo.yaml'],
        env: { MESHID_CLOCK_SKWE: '1s' },
        readFile,
      }),
    );
    assert.match(
      err.message,
      /certLifetme: unknown setting for "meshid ca"; did you mean "certLifetime"\?/,
    );
    assert.match(
      err.message,
      /MESHID_CLOCK_SKWE: unknown MESHID_ environment variable; did you mean "MESHID_CLOCK_SKEW"\?/,
    );
  });

  it('reports every bad field at once, each named', () => {
    const err = configError(() =>
      loadConfig('ca', {
        argv: [
          '--cert-lifetime',
          'forever',
          '--listen',
          'nowhere',
          '--trust-domain',
          'Not_A_Domain',
        ],
        env: {},
      }),
    );
    assert.match(err.message, /--cert-lifetime: must be a duration/);
    assert.match(err.message, /--listen: must be HOST:PORT/);
    assert.match(err.message, /3 problems|2 problems/);
  });

  it('validates values after merging: trust domain, skew below lifetime', () => {
    const err = configError(() =>
      loadConfig('ca', {
        argv: ['--trust-domain', 'UPPER.case', '--cert-lifetime', '2m', '--clock-skew', '5m'],
        env: {},
      }),
    );
    assert.match(
      err.message,
      /trustDomain \(--trust-domain, MESHID_TRUST_DOMAIN\): must be a DNS-1123 subdomain/,
    );
    assert.match(err.message, /clockSkew .*: must be less than certLifetime/);
  });

  it('requires all four inputs when any is given without a state folder', () => {
    const err = configError(() =>
      loadConfig('ca', {
        argv: ['--trust-anchors', '/a.pem', '--token-validator', 'jwks'],
        env: {},
      }),
    );
    assert.match(err.message, /issuerDir .*: is required \(or issuerSecret\)/);
    assert.match(err.message, /jwks .*: is required with tokenValidator jwks/);
    assert.match(err.message, /tokenIssuer .*: is required with tokenValidator jwks/);
  });

  it('validates tokens with TokenReview in the cluster when no JWKS is given', () => {
    const { config } = loadConfig('ca', {
      argv: ['--issuer-secret', 'linkerd-identity-issuer'],
      env: { MESHID_TRUST_ANCHORS_CONFIG_MAP: 'linkerd-identity-trust-roots' },
    });
    assert.equal(config.tokenValidator, 'tokenreview');
    assert.equal(config.kubeconfig, 'in-cluster');
    assert.equal(config.namespace, 'linkerd');
    assert.equal(config.trustAnchorsKey, 'ca-bundle.crt');
    assert.equal(config.tokenReviewUnsafeNoAudienceFallback, false);
    assert.equal(config.tokenReviewCacheTtl, 10_000);
    assert.equal(config.issuerDir, undefined);
  });

  it('refuses two sources for one input, and an issuer Secret with a mounted anchors file', () => {
    const err = configError(() =>
      loadConfig('ca', {
        argv: [
          '--issuer-dir',
          '/i',
          '--issuer-secret',
          'issuer',
          '--trust-anchors',
          '/a.pem',
          '--token-validator',
          'tokenreview',
          '--token-issuer',
          'https://kubernetes.default.svc',
        ],
        env: {},
      }),
    );
    assert.match(err.message, /issuerSecret .*: cannot be combined with issuerDir/);
    assert.match(
      err.message,
      /trustAnchorsConfigMap .*: is required: the issuer Secret and the anchors ConfigMap are read together/,
    );
    assert.match(err.message, /tokenIssuer .*: applies only with tokenValidator jwks/);
  });

  it("takes the cluster's JWKS without an explicit token issuer", () => {
    const { config } = loadConfig('ca', {
      argv: ['--jwks', 'kubernetes', '--issuer-dir', '/i', '--trust-anchors', '/a.pem'],
      env: {},
    });
    assert.equal(config.tokenValidator, 'jwks');
    assert.equal(config.kubeconfig, 'in-cluster');
    assert.equal(config.tokenIssuer, undefined);
  });

  it('runs without the Kubernetes API when everything is a file', () => {
    const { config } = loadConfig('ca', { argv: ['--dir', '/s'], env: {} });
    assert.equal(config.tokenValidator, 'jwks');
    assert.equal(config.kubeconfig, undefined);
  });

  it('lets explicit inputs override the state folder', () => {
    const { config } = loadConfig('ca', {
      argv: ['--dir', '/s', '--jwks', 'https://kube.example/openid/v1/jwks'],
      env: {},
    });
    assert.equal(config.issuerDir, '/s/issuer');
    assert.equal(config.jwks, 'https://kube.example/openid/v1/jwks');
  });

  it('parses boolean environment values and refuses others', () => {
    assert.equal(loadConfig('init', { argv: [], env: { MESHID_FORCE: '1' } }).config.force, true);
    assert.equal(
      loadConfig('init', { argv: [], env: { MESHID_FORCE: 'false' } }).config.force,
      false,
    );
    const err = configError(() => loadConfig('init', { argv: [], env: { MESHID_FORCE: 'yes' } }));
    assert.match(err.message, /MESHID_FORCE: must be true or false/);
  });

  it('takes FIPS mode from the file, MESHID_FIPS and --fips, for every command', () => {
    for (const command of ['init', 'token', 'ca', 'proxy', 'local', 'install'] as const) {
      assert.ok('fips' in COMMAND_SETTINGS[command], command);
    }
    assert.equal(loadConfig('ca', { argv: ['--fips'], env: {} }).config.fips, true);
    assert.equal(loadConfig('ca', { argv: [], env: { MESHID_FIPS: '1' } }).config.fips, true);
    assert.equal(
      loadConfig('ca', { argv: ['--config', 'c.yaml'], env: {}, readFile: () => 'fips: true\n' })
        .config.fips,
      true,
    );
    assert.equal(loadConfig('ca', { argv: [], env: { MESHID_FIPS: '0' } }).config.fips, false);
    assert.equal(loadConfig('ca', { argv: [], env: {} }).config.fips, false);
    const err = configError(() => loadConfig('ca', { argv: [], env: { MESHID_FIPS: 'on' } }));
    assert.match(err.message, /MESHID_FIPS: must be true or false/);
  });

  it('freezes the result', () => {
    const { config } = loadConfig('ca', { argv: [], env: {} });
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.listen));
  });

  it('requires the service account and namespace of a token, as DNS-1123 labels', () => {
    const err = configError(() => loadConfig('token', { argv: ['--ns', 'Default'], env: {} }));
    assert.match(err.message, /ns .*: must be a DNS-1123 label/);
    assert.match(err.message, /sa .*: is required/);
  });

  it('parses listen addresses, including IPv6 and port 0', () => {
    assert.deepEqual(parseAddress('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseAddress('[::1]:8080'), { host: '::1', port: 8080 });
    assert.equal(parseAddress('127.0.0.1:65536'), undefined);
    assert.equal(parseAddress('127.0.0.1'), undefined);
  });
});

describe('config: the CA identity', () => {
  it('refuses a CA identity that is not a workload identity of the trust domain', () => {
    try {
      loadConfig('ca', { argv: ['--identity-name', 'ca.example.com'], env: {} });
      assert.fail('expected ERR_CONFIG_INVALID');
    } catch (err) {
      assert.ok(isMeshidError(err, 'ERR_CONFIG_INVALID'));
      assert.match(
        err.message,
        /identityName .*not of the form <sa>\.<ns>\.serviceaccount\.identity\.linkerd\.cluster\.local/,
      );
    }
  });
});

describe('config: meshid proxy', () => {
  const base = [
    '--identity-addr',
    '127.0.0.1:8080',
    '--identity-name',
    'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
    '--trust-anchors',
    '/a.pem',
    '--token-file',
    '/t',
    '--local-identity',
    'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
  ];

  it('takes repeated --route flags, or a comma-separated MESHID_ROUTE, as a list', () => {
    const r =
      '127.0.0.1:4140=10.0.0.1:4143@web.emojivoto.serviceaccount.identity.linkerd.cluster.local';
    const two = loadConfig('proxy', {
      argv: [...base, '--route', r, '--route', r],
      env: {},
    }).config;
    assert.deepEqual(two.route, [r, r]);
    const env = loadConfig('proxy', { argv: base, env: { MESHID_ROUTE: `${r}, ${r}` } }).config;
    assert.deepEqual(env.route, [r, r]);
    assert.deepEqual(loadConfig('proxy', { argv: base, env: {} }).config.route, []);
  });

  it('listens inbound on 4143 when an app is given, on 4140 for destinations, and requires an app for inbound', () => {
    const withApp = loadConfig('proxy', {
      argv: [...base, '--app', '127.0.0.1:8080'],
      env: {},
    }).config;
    assert.deepEqual(withApp.inbound, { host: '127.0.0.1', port: 4143 });
    const withDest = loadConfig('proxy', {
      argv: [
        ...base,
        '--destination',
        'web.emojivoto.svc:80=10.0.0.1:4143@web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
      ],
      env: {},
    }).config;
    assert.deepEqual(withDest.outbound, { host: '127.0.0.1', port: 4140 });
    assert.deepEqual(loadConfig('proxy', { argv: base, env: {} }).config.admin, {
      host: '127.0.0.1',
      port: 4191,
    });
    assert.throws(
      () => loadConfig('proxy', { argv: [...base, '--inbound', '127.0.0.1:4143'], env: {} }),
      /app .*: is required with inbound/,
    );
  });

  it('in transparent mode, listens outbound on 127.0.0.1:4140 and asks the destination service named by the naming', () => {
    const t = loadConfig('proxy', { argv: [...base, '--transparent'], env: {} }).config;
    assert.deepEqual(t.transparentOutbound, { host: '127.0.0.1', port: 4140 });
    assert.equal(t.destinationAddr, 'linkerd-dst.linkerd.svc:8086');
    assert.equal(
      t.destinationName,
      'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local',
    );
    const other = loadConfig('proxy', {
      argv: [...base, '--transparent', '--control-plane-namespace', 'mesh'],
      env: { MESHID_TRUST_DOMAIN: 'corp.example', MESHID_DESTINATION_ADDR: '10.96.0.9:8086' },
    }).config;
    assert.equal(other.destinationAddr, '10.96.0.9:8086');
    assert.equal(
      other.destinationName,
      'linkerd-destination.mesh.serviceaccount.identity.mesh.corp.example',
    );
    assert.equal(
      loadConfig('proxy', { argv: base, env: {} }).config.transparentOutbound,
      undefined,
    );
    assert.throws(
      () =>
        loadConfig('proxy', {
          argv: [...base, '--transparent', '--destination-addr', 'linkerd-dst'],
          env: {},
        }),
      /destinationAddr .*: must be HOST:PORT/,
    );
    assert.throws(
      () =>
        loadConfig('proxy', {
          argv: [...base, '--transparent', '--outbound', '127.0.0.1:4140'],
          env: {},
        }),
      /outbound .*: must not use port 4140: the transparent outbound listens there \(--transparent-outbound\)/,
    );
  });

  it('pod-certificate identity: a credential bundle instead of a token and the CA', () => {
    const argv = [
      '--identity-source',
      'pod-certificate',
      '--trust-anchors',
      '/var/run/meshid/ca-bundle.crt',
      '--local-identity',
      'web.emojivoto.serviceaccount.identity.linkerd.cluster.local',
    ];
    assert.throws(
      () => loadConfig('proxy', { argv, env: {} }),
      (err: Error) =>
        /credentialBundle .*: is required with identitySource pod-certificate/.test(err.message) &&
        !/tokenFile/.test(err.message),
    );
    const { config } = loadConfig('proxy', {
      argv: [...argv, '--credential-bundle', '/var/run/meshid/credentialbundle.pem'],
      env: {},
    });
    assert.equal(config.identitySource, 'pod-certificate');
    assert.equal(config.tokenFile, undefined);
  });

  it('names each missing required setting', () => {
    assert.throws(
      () => loadConfig('proxy', { argv: [], env: {} }),
      (err: Error) =>
        ['identityAddr', 'identityName', 'trustAnchors', 'tokenFile', 'localIdentity'].every((k) =>
          new RegExp(`${k} .*: is required`).test(err.message),
        ),
    );
  });
});

describe('config: meshid install', () => {
  it('fills the install defaults: two replicas, the default image, names and validator', () => {
    const { config } = loadConfig('install', { argv: [], env: {} });
    assert.deepEqual(
      {
        replicas: config.replicas,
        image: config.image,
        controlPlaneNamespace: config.controlPlaneNamespace,
        trustDomain: config.trustDomain,
        issuerSecret: config.issuerSecret,
        trustAnchorsConfigMap: config.trustAnchorsConfigMap,
        trustAnchorsKey: config.trustAnchorsKey,
        tokenValidator: config.tokenValidator,
        trustAnchors: config.trustAnchors,
        certManager: config.certManager,
        certManagerIssuer: config.certManagerIssuer,
      },
      {
        replicas: 2,
        image: 'ghcr.io/meshid/meshid:v0.1.0',
        controlPlaneNamespace: 'linkerd',
        trustDomain: 'cluster.local',
        issuerSecret: 'linkerd-identity-issuer',
        trustAnchorsConfigMap: 'linkerd-identity-trust-roots',
        trustAnchorsKey: 'ca-bundle.crt',
        tokenValidator: 'tokenreview',
        trustAnchors: undefined,
        certManager: false,
        certManagerIssuer: 'linkerd-trust-anchor',
      },
    );
  });

  it('takes install settings from flags and MESHID_ variables', () => {
    const { config } = loadConfig('install', {
      argv: ['--replicas', '3', '--trust-anchors-key', 'roots.pem', '--cert-manager'],
      env: { MESHID_IMAGE: 'example.org/meshid:dev', MESHID_TOKEN_VALIDATOR: 'jwks' },
    });
    assert.equal(config.replicas, 3);
    assert.equal(config.trustAnchorsKey, 'roots.pem');
    assert.equal(config.certManager, true);
    assert.equal(config.image, 'example.org/meshid:dev');
    assert.equal(config.tokenValidator, 'jwks');
  });

  it('refuses a bad anchors key, replica count or validator, naming each', () => {
    const err = configError(() =>
      loadConfig('install', {
        argv: ['--trust-anchors-key', 'a/b', '--replicas', '0', '--token-validator', 'x'],
        env: {},
      }),
    );
    assert.match(err.message, /3 problems/);
    for (const field of ['trustAnchorsKey', 'replicas', 'tokenValidator'])
      assert.match(err.message, new RegExp(`${field} \\(--`));
  });
});
