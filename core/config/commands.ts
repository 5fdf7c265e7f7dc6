/**
 * Every command's settings table and the schema derived from it, and the configuration types
 * the rest of meshid uses. A command's table is declared in its component's file beside this one.
 */
import type { z } from 'zod';
import { CA, CA_SCHEMA, INIT, LOCAL, TOKEN } from './ca.js';
import { DESTINATION, WEBHOOKS } from './control-plane.js';
import { INSTALL, INSTALL_SCHEMA, TRUST } from './install.js';
import { CHECK, IDENTITY, IDENTITY_SCHEMA, VERSION } from './inspect.js';
import { PROXY, PROXY_INIT, PROXY_SCHEMA } from './proxy.js';
import { schemaOf } from './setting.js';
import type { Settings } from './setting.js';

/** Settings per command. Flags are the kebab-case of the keys. */
export const COMMAND_SETTINGS = {
  init: INIT,
  token: TOKEN,
  ca: CA,
  install: INSTALL,
  proxy: PROXY,
  'proxy-init': PROXY_INIT,
  destination: DESTINATION,
  webhooks: WEBHOOKS,
  trust: TRUST,
  local: LOCAL,
  check: CHECK,
  identity: IDENTITY,
  version: VERSION,
} as const satisfies Record<string, Settings>;

export type CommandName = keyof typeof COMMAND_SETTINGS;

/** The schema of each command: its table's, plus the checks across settings where it has some. */
export const SCHEMAS = {
  init: schemaOf(INIT),
  token: schemaOf(TOKEN),
  ca: CA_SCHEMA,
  install: INSTALL_SCHEMA,
  proxy: PROXY_SCHEMA,
  'proxy-init': schemaOf(PROXY_INIT),
  destination: schemaOf(DESTINATION),
  webhooks: schemaOf(WEBHOOKS),
  trust: schemaOf(TRUST),
  local: schemaOf(LOCAL),
  check: schemaOf(CHECK),
  identity: IDENTITY_SCHEMA,
  version: schemaOf(VERSION),
} satisfies Record<CommandName, z.ZodType>;

/** The validated, frozen configuration of each command. */
export type CommandConfigs = { [C in CommandName]: Readonly<z.infer<(typeof SCHEMAS)[C]>> };
export type CaConfig = CommandConfigs['ca'];
export type InstallConfig = CommandConfigs['install'];
export type ProxyConfig = CommandConfigs['proxy'];
export type WebhooksConfig = CommandConfigs['webhooks'];
export type DestinationConfig = CommandConfigs['destination'];
export type CheckConfig = CommandConfigs['check'];
export type IdentityConfig = CommandConfigs['identity'];
export type VersionConfig = CommandConfigs['version'];
export type TrustConfig = CommandConfigs['trust'];
export type ProxyInitConfig = CommandConfigs['proxy-init'];
