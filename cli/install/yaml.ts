/**
 * Validates the install's objects and prints them as one multi-document YAML stream. The YAML
 * library builds every document from the objects' JSON; the reasons for settings and permissions
 * are attached to the nodes they explain as comments, never spliced into text.
 */
import { Document, isMap, isNode, isScalar } from 'yaml';
import type { Node } from 'yaml';
import { MeshidError } from '../../core/index.js';
import type { ManifestObject } from './workload.js';

/**
 * Checks every object against its kubernetes-models schema, then serialises them in order.
 * Throws before returning any text, so a caller never prints half an install.
 */
export function manifestYaml(objects: readonly ManifestObject[], header?: string): string {
  for (const { object } of objects) {
    try {
      object.validate();
    } catch (err) {
      // A schema failure here is meshid's bug, not the user's input: the inputs were validated
      // by the config schema already.
      throw new MeshidError(
        'ERR_INTERNAL',
        `rendered ${object.kind} does not validate against its schema: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return objects
    .map((o, i) => {
      const doc = new Document(o.object.toJSON());
      // Each document opens with `---`, so the stream can be split and applied as it is.
      doc.directives!.docStart = true;
      const top = i === 0 && header !== undefined ? `${header}\n\n${o.comment}` : o.comment;
      if (isNode(doc.contents)) doc.contents.commentBefore = asComment(top);
      for (const note of o.notes) {
        const node = commentTarget(doc, note.path);
        if (node === undefined) {
          throw new MeshidError(
            'ERR_INTERNAL',
            `no node at ${note.path.join('.')} of ${o.object.kind} to attach a comment to`,
          );
        }
        node.commentBefore = asComment(note.text);
      }
      // lineWidth 0: long values (PEM lines, arguments) stay on one line, as written.
      return doc.toString({ lineWidth: 0 });
    })
    .join('');
}

/**
 * The node a comment goes above: the key of a mapping entry (a comment on a value would be printed
 * between the key and the value), or the item of a sequence.
 */
function commentTarget(doc: Document, path: readonly (string | number)[]): Node | undefined {
  const last = path.at(-1);
  if (typeof last === 'string') {
    const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
    if (!isMap(parent)) return undefined;
    const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === last);
    return pair !== undefined && isScalar(pair.key) ? pair.key : undefined;
  }
  const node = doc.getIn(path, true);
  return isNode(node) ? node : undefined;
}

/** A comment's text with one space after each `#`, as the YAML library prints `#` + text. */
function asComment(text: string): string {
  return text
    .split('\n')
    .map((line) => ` ${line}`)
    .join('\n');
}
