// Dotted command-line overrides (`--model.nLayer=6`, `--train.recompute`) applied to a
// typed config. The config object itself is the schema: a key must already exist,
// and the value is parsed to the type of the value it replaces.

export function applyOverrides<T extends object>(config: T, overrides: Record<string, string>, where = 'config'): T {
  for (const [key, raw] of Object.entries(overrides)) setPath(config, key, raw, where);
  return config;
}

function setPath(root: object, key: string, raw: string, where: string): void {
  const parts = key.split('.');
  let obj = root as Record<string, unknown>;
  for (let i = 0; i < parts.length - 1; i++) {
    const next = obj[parts[i]!];
    if (next === null || typeof next !== 'object') throw unknownKey(root, key, where);
    obj = next as Record<string, unknown>;
  }
  const leaf = parts[parts.length - 1]!;
  if (!(leaf in obj) || (typeof obj[leaf] === 'object' && obj[leaf] !== null)) throw unknownKey(root, key, where);
  const cur = obj[leaf];
  if (typeof cur === 'number') {
    const v = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(v)) throw new Error(`${where}: --${key} expects a number, got '${raw}'`);
    obj[leaf] = v;
  } else if (typeof cur === 'boolean') {
    if (!['true', 'false', '1', '0', ''].includes(raw)) throw new Error(`${where}: --${key} expects true or false, got '${raw}'`);
    obj[leaf] = raw === 'true' || raw === '1' || raw === '';
  } else {
    obj[leaf] = raw;
  }
}

export function configKeys(root: object, prefix = ''): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(root)) {
    if (v !== null && typeof v === 'object') out.push(...configKeys(v, `${prefix}${k}.`));
    else out.push(prefix + k);
  }
  return out;
}

function unknownKey(root: object, key: string, where: string): Error {
  const keys = configKeys(root);
  const best = keys.map((k) => [k, editDistance(k.toLowerCase(), key.toLowerCase())] as const).sort((a, b) => a[1] - b[1])[0];
  const hint = best && best[1] <= Math.max(3, key.length / 3) ? ` (did you mean --${best[0]}?)` : '';
  return new Error(`${where}: unknown config key '${key}'${hint}`);
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length]!;
}

/** Splits argv into positional args, `--dotted.key=value` overrides and plain flags. */
export function parseArgs(argv: string[], booleanFlags: readonly string[] = []): { positional: string[]; flags: Record<string, string> } {
  const positional: string[] = [];
  const flags: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') { positional.push(...argv.slice(i + 1)); break; }
    if (!a.startsWith('--')) { positional.push(a); continue; }
    const eq = a.indexOf('=');
    if (eq > 0) { flags[a.slice(2, eq)] = a.slice(eq + 1); continue; }
    const name = a.slice(2);
    const next = argv[i + 1];
    if (booleanFlags.includes(name) || next === undefined || next.startsWith('--')) flags[name] = '';
    else { flags[name] = next; i++; }
  }
  return { positional, flags };
}
