// Copies the repository's proto/iadb/v1/database.proto into this package
// (proto/iadb/v1/, ignored by git), so that the package carries the
// protocol it was built with and never a stale hand-made copy. Run by
// `npm run build` (and so by `npm pack` / `npm publish` through `prepack`).
// Outside the repository (an unpacked tarball) the copy it holds is kept.
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const source = path.resolve(root, "..", "..", "proto", "iadb", "v1", "database.proto");
const target = path.join(root, "proto", "iadb", "v1", "database.proto");

if (fs.existsSync(source)) {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.copyFileSync(source, target);
} else if (!fs.existsSync(target)) {
  console.error(`copy-proto: neither ${source} nor ${target} exists`);
  process.exit(1);
}
