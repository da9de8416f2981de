// @ts-check
/**
 * Copy the demo page's two npm dependencies, the markdown renderer (`marked`) and the
 * HTML sanitiser (`dompurify`), from node_modules into `vendor/`, where the page
 * imports them (`/static/vendor/...`) and the Python wheel's build picks them up.
 * Run by `npm ci` (the `prepare` script); `vendor/` is build output, not committed.
 * The published client has no dependencies: only the demo page uses these.
 *
 * @module scripts/vendor
 */

import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { toolplex } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
mkdirSync(join(root, 'vendor'), { recursive: true });
for (const [name, from] of Object.entries(toolplex.vendor)) {
  copyFileSync(join(root, 'node_modules', from), join(root, 'vendor', name));
}
