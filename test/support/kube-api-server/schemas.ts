/**
 * The field schemas of the built-in kinds, for strict field validation (field-validation.ts): which
 * JSON fields an object of a kind has, at every depth. They are not written here: they are read
 * from `@kubernetes/client-node`'s generated models, which the OpenAPI generator made from the
 * Kubernetes API's own OpenAPI document (release-1.36): every model class lists its fields with
 * their JSON names and types (`attributeTypeMap`), and a type is a model name, `Array<T>`,
 * `{ [key: string]: T; }` or a scalar (`string`, `number`, `boolean`, `Date`, `IntOrString`,
 * `any`, …).
 *
 * A kind's model is `<Version><Kind>` (`V1ConfigMap`, `V1beta1ClusterTrustBundle`), or with the
 * group's first label in front when the name is shared (`CoreV1Event`, `EventsV1Event`). Custom
 * resources (cert-manager's) and kinds the models do not have (PodCertificateRequest in
 * `certificates.k8s.io/v1`, newer than the models) have no schema: their fields are not checked.
 */
import * as clientNode from '@kubernetes/client-node';
import type { ResourceType } from './resources.js';

interface Attribute {
  readonly baseName: string;
  readonly type: string;
}

interface Model {
  getAttributeTypeMap(): readonly Attribute[];
}

/** What a value of a type is made of. */
export type Shape =
  | { readonly kind: 'object'; readonly fields: ReadonlyMap<string, string> }
  | { readonly kind: 'list'; readonly item: string }
  | { readonly kind: 'map'; readonly value: string }
  /** A scalar, or a value the schema leaves open (`any`, RawExtension): not looked into. */
  | { readonly kind: 'open' };

const exported = clientNode as unknown as Record<string, unknown>;

function model(name: string): Model | undefined {
  const c = exported[name];
  return typeof c === 'function' &&
    typeof (c as unknown as Partial<Model>).getAttributeTypeMap === 'function'
    ? (c as unknown as Model)
    : undefined;
}

const OPEN: Shape = { kind: 'open' };
const shapes = new Map<string, Shape>();

/** The shape of a client-node type expression. */
export function shapeOf(type: string): Shape {
  let s = shapes.get(type);
  if (s !== undefined) return s;
  const list = /^Array<(.+)>$/.exec(type);
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  const m = model(type);
  if (list !== null) s = { kind: 'list', item: list[1]! };
  else if (map !== null) s = { kind: 'map', value: map[1]! };
  else if (m !== undefined)
    s = {
      kind: 'object',
      fields: new Map(m.getAttributeTypeMap().map((a) => [a.baseName, a.type])),
    };
  else s = OPEN;
  shapes.set(type, s);
  return s;
}

const capital = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);

/** The model of a resource type's objects, or undefined when its fields are not checked. */
export function rootTypeOf(t: ResourceType): string | undefined {
  if (t.custom === true || t.virtual === true) return undefined;
  const plain = `${capital(t.version)}${t.kind}`;
  const prefix = t.group === '' ? 'Core' : capital(t.group.split('.')[0]!);
  for (const name of [plain, `${prefix}${plain}`]) if (model(name) !== undefined) return name;
  return undefined;
}
