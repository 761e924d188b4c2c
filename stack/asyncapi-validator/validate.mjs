// Validate an AsyncAPI document with the official parser (@asyncapi/parser: schema + spectral rules).
// Usage: node validate.mjs docs/asyncapi.yaml — exit 1 on any error or warning, printing each.
import { Parser, fromFile } from '@asyncapi/parser';

const path = process.argv[2];
const { document, diagnostics } = await fromFile(new Parser(), path).parse();
const severities = ['error', 'warning', 'info', 'hint'];
for (const d of diagnostics) {
  console.log(`${severities[d.severity]} ${d.code} at ${d.path.join('/') || '<root>'}: ${d.message}`);
}
const problems = diagnostics.filter((d) => d.severity <= 1);
if (!document || problems.length > 0) {
  console.log(`${path}: INVALID (${problems.length} errors/warnings)`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
  `${document.operations().length} operations, ${document.messages().length} messages`);
