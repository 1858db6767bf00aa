// The package's shape: every runtime export is declared (with a doc comment) in index.d.ts,
// and package.json points Node and browsers at existing entry points.
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import * as sdk from '../../node.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

test('index.d.ts declares and documents every runtime export', () => {
  const dts = readFileSync(path.join(root, 'index.d.ts'), 'utf8');
  for (const name of Object.keys(sdk)) {
    const decl = new RegExp(`/\\*\\*[^]*?\\*/\\s*export declare (class|function) ${name}\\b`);
    assert.match(dts, decl, `${name} is declared with a doc comment`);
  }
  const exported = [...dts.matchAll(/export (?:declare )?(?:class|function|interface|type) (\w+)/g)];
  for (const [whole, name] of exported) {
    const at = dts.indexOf(whole);
    assert.ok(dts.slice(0, at).trimEnd().endsWith('*/'), `${name} has a doc comment`);
  }
});

test('package.json exports resolve to built entry points', () => {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.equal(pkg.name, 'sealbus');
  const entry = pkg.exports['.'];
  for (const file of [entry.types, entry.node, entry.browser, entry.default]) {
    assert.ok(existsSync(path.join(root, file)), file);
  }
  for (const file of ['dist/web/sealbus_wasm_bg.wasm', 'dist/node/sealbus_wasm_bg.wasm']) {
    assert.ok(existsSync(path.join(root, file)), file);
  }
});
