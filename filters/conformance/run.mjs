#!/usr/bin/env node
// A reference runner for event-collector filter modules, independent of the
// collector: it runs test vectors through a module in Node.js, the way the
// wasmtime host does (init once per instance, then process per event; a new
// instance after a trap), for both module kinds:
//
//   components   transpiled with jco (cached by sha256), WASI 0.2 from
//                @bytecodealliance/preview2-shim, sandboxed: no preopens, no
//                env, no network; host.log printed with --verbose
//   core modules the core-module ABI of guest-sdk/README.md, WASI preview 1
//                from node:wasi (no preopens, no env, no args)
//
// Usage (after dev_setup/install-wasm-toolchains.sh; `. filters/env.sh`):
//   node filters/conformance/run.mjs test MODULE.wasm VECTORS.jsonl... [--config CONFIG.json] [--verbose]
//   node filters/conformance/run.mjs all [FILTER...]     every filters/<name>/<name>.wasm with its vectors
//   node filters/conformance/run.mjs gen [--check]       regenerate (or check) every filter's vectors
//                                                        from conformance/inputs.jsonl + <name>/expect.json
//   node filters/conformance/run.mjs contract            the contract modules (conformance/contract/*.wat):
//                                                        failure paths and ABI corners every host must handle
//
// Vector files: *.test.jsonl (process) and *.init-test.jsonl (init), format
// in filters/README.md. Ends with "N passed, N failed"; exit 1 on a failure.

import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import v8 from 'node:v8';

// componentize-py's CPython uses extended constant expressions, which Node 20's
// V8 has behind a flag (on by default from Node 22).
v8.setFlagsFromString('--experimental-wasm-extended-const');

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FILTERS = path.dirname(HERE);
const EC_CACHE = process.env.EVENT_COLLECTOR_CACHE || path.join(process.env.HOME, '.cache/event-collector');
const NODE_WASM = path.join(EC_CACHE, 'node-wasm');

// node:wasi prints an ExperimentalWarning: not useful here.
const emitWarning = process.emitWarning;
process.emitWarning = (w, ...rest) => (String(w).includes('WASI') ? undefined : emitWarning.call(process, w, ...rest));

let verbose = false;

// ---- the normalized event schema (docs/event-schema.md), as the host checks it ----

const OBJECT_KEYS = ['kind', 'namespace', 'name', 'uid', 'api_version', 'field_path', 'resource_version'];
const STRING_KEYS = ['cluster', 'uid', 'resource_version', 'name', 'namespace', 'timestamp'];
const NULLABLE_KEYS = ['type', 'reason', 'message', 'note', 'action', 'reporting_controller', 'reporting_instance',
  'first_timestamp', 'last_timestamp'];
const ALL_KEYS = new Set(['schema_version', 'api', 'watch_type', ...STRING_KEYS, ...NULLABLE_KEYS, 'object', 'related',
  'count', 'count_delta', 'labels', 'annotations', 'extra', 'raw']);

function isObj(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// ---- the edit verdict (contract 0.2.0; set-label-if-absent 0.3.0), applied as the host applies it ----

/**
 * Applies `edits` ([name, args] pairs) in order to a copy of `input`, all or
 * nothing: every key non-empty, label/annotation values strings, set-extra
 * values JSON (text for components when `extraAsText`). Returns {out} or {invalid}.
 */
function applyEdits(input, edits, extraAsText) {
  const out = structuredClone(input);
  const str = (x) => typeof x === 'string';
  const pair = (a) => Array.isArray(a) && a.length === 2 && str(a[0]);
  const ops = [];
  for (const [i, [name, args]] of edits.entries()) {
    const bad = (why) => ({ invalid: `edit #${i + 1} (${name}) is invalid: ${why}` });
    const key = name === 'set-message' ? null : pair(args) ? args[0] : args;
    if (key !== null && !str(key)) return bad('no string key');
    if (key === '') return bad('the key is empty');
    switch (name) {
      case 'set-label':
      case 'set-annotation': {
        if (!pair(args) || !str(args[1])) return bad('the value is not a string');
        const field = name === 'set-label' ? 'labels' : 'annotations';
        ops.push(() => (out[field] = { ...(out[field] ?? {}), [args[0]]: args[1] }));
        break;
      }
      case 'set-label-if-absent': {
        // 0.3.0: a default; it sees the labels as the edits before it left them.
        if (!pair(args) || !str(args[1])) return bad('the value is not a string');
        ops.push(() => {
          if (!Object.hasOwn(out.labels ?? {}, args[0])) out.labels = { ...(out.labels ?? {}), [args[0]]: args[1] };
        });
        break;
      }
      case 'remove-label':
      case 'remove-annotation':
      case 'remove-extra': {
        const field = { 'remove-label': 'labels', 'remove-annotation': 'annotations', 'remove-extra': 'extra' }[name];
        ops.push(() => out[field] && delete out[field][args]);
        break;
      }
      case 'set-extra': {
        if (!pair(args)) return bad('not [key, value]');
        let value = args[1];
        if (extraAsText) {
          try {
            value = JSON.parse(args[1]);
          } catch (e) {
            return bad(`the value for extra key ${JSON.stringify(args[0])} is not JSON (${e.message})`);
          }
        }
        ops.push(() => (out.extra = { ...(out.extra ?? {}), [args[0]]: value }));
        break;
      }
      case 'set-message':
        if (!str(args)) return bad('the message is not a string');
        ops.push(() => {
          out.message = args;
          out.note = args;
        });
        break;
      default:
        return bad('no such edit');
    }
  }
  for (const op of ops) op();
  if (out.extra && Object.keys(out.extra).length === 0) delete out.extra;
  return { out };
}

function checkObjectRef(v, where) {
  if (!isObj(v)) return `${where} is not an object`;
  for (const k of Object.keys(v)) if (!OBJECT_KEYS.includes(k)) return `${where}.${k} is not a schema key`;
  for (const k of OBJECT_KEYS) {
    if (!(k in v)) return `${where}.${k} is missing`;
    if (v[k] !== null && typeof v[k] !== 'string') return `${where}.${k} is not a string or null`;
  }
  return null;
}

function stringMap(v) {
  return isObj(v) && Object.values(v).every((x) => typeof x === 'string');
}

/** Returns null for a valid normalized event, else why not. */
export function checkNormalized(ev) {
  if (!isObj(ev)) return 'not a JSON object';
  for (const k of Object.keys(ev)) if (!ALL_KEYS.has(k)) return `unknown top-level key "${k}"`;
  if (ev.schema_version !== 1) return 'schema_version is not 1';
  if (!['core/v1', 'events.k8s.io/v1'].includes(ev.api)) return 'api is not core/v1 or events.k8s.io/v1';
  if (!['ADDED', 'MODIFIED', 'DELETED'].includes(ev.watch_type)) return 'watch_type is not ADDED/MODIFIED/DELETED';
  for (const k of STRING_KEYS) if (typeof ev[k] !== 'string') return `${k} is not a string`;
  for (const k of NULLABLE_KEYS) {
    if (!(k in ev)) return `${k} is missing`;
    if (ev[k] !== null && typeof ev[k] !== 'string') return `${k} is not a string or null`;
  }
  const o = checkObjectRef(ev.object, 'object');
  if (o) return o;
  if (!('related' in ev)) return 'related is missing';
  if (ev.related !== null) {
    const r = checkObjectRef(ev.related, 'related');
    if (r) return r;
  }
  if (!Number.isInteger(ev.count) || ev.count < 1) return 'count is not an integer >= 1';
  if (!Number.isInteger(ev.count_delta) || ev.count_delta < 0) return 'count_delta is not an integer >= 0';
  if (!stringMap(ev.labels)) return 'labels is not an object of strings';
  if (!stringMap(ev.annotations)) return 'annotations is not an object of strings';
  if ('extra' in ev && !isObj(ev.extra)) return 'extra is not an object';
  return null;
}

/** The fields the host extracts for `process` (an absent value is ""). */
function eventFields(ev) {
  const s = (v) => (typeof v === 'string' ? v : '');
  return {
    eventType: s(ev.type),
    reason: s(ev.reason),
    namespace: s(ev.namespace),
    kind: s(ev.object?.kind),
    name: s(ev.object?.name),
  };
}

// ---- loading modules ------------------------------------------------------------------

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

function hostLog(module, level, message) {
  if (verbose) console.error(`    [${module}] ${level}: ${message}`);
}

function isComponent(bytes) {
  // Core modules have version 1 (01 00 00 00); components layer 1 (0d 00 01 00).
  return bytes.length >= 8 && bytes[4] === 0x0d && bytes[6] === 0x01;
}

async function loadComponent(file, bytes) {
  const sha = createHash('sha256').update(bytes).digest('hex').slice(0, 16);
  // Inside node-wasm so the transpiled code resolves @bytecodealliance/preview2-shim.
  const dir = path.join(NODE_WASM, 'transpiled', sha);
  if (!fs.existsSync(path.join(dir, 'component.js'))) {
    const tmp = `${dir}.tmp${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    execFileSync(path.join(NODE_WASM, 'node_modules/.bin/jco'),
      ['transpile', file, '-o', tmp, '--name', 'component', '--instantiation', 'async', '--no-typescript', '--quiet'],
      { stdio: ['ignore', 'ignore', 'inherit'] });
    fs.writeFileSync(path.join(tmp, 'package.json'), '{ "type": "module" }\n');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  }
  const { instantiate } = await import(pathToFileURL(path.join(dir, 'component.js')).href);
  const require = createRequire(path.join(NODE_WASM, 'package.json'));
  const { WASIShim } = await import(pathToFileURL(require.resolve('@bytecodealliance/preview2-shim/instantiation')).href);
  const cores = new Map();
  const getCoreModule = (name) => {
    if (!cores.has(name)) cores.set(name, WebAssembly.compile(fs.readFileSync(path.join(dir, name))));
    return cores.get(name);
  };
  const name = path.basename(file);
  const mod = {
    kind: 'component',
    version: undefined, // the contract version of the component's filter export, known once instantiated
    eventCalls: 0, // process calls that asked for the event JSON (host.event, contract 0.3.0)
    async instantiate() {
      const imports = new WASIShim({ sandbox: { preopens: {}, env: {}, args: [name], enableNetwork: false } }).getImportObject();
      // host.event (0.3.0): the event of the running process call, "" outside one.
      let current = '';
      let asked = false;
      const event = () => {
        asked = true;
        return current;
      };
      imports['event-collector:filter/host'] = { log: (level, msg) => hostLog(name, level, msg), event };
      const inst = await instantiate(getCoreModule, imports);
      const key = Object.keys(inst).find((k) => k.startsWith('event-collector:filter/filter@'));
      const version = key ? key.slice(key.indexOf('@') + 1) : undefined;
      const f = inst.filter ?? inst[key];
      if (!f || !version) throw new Error(`${name}: no event-collector:filter/filter export`);
      mod.version = version;
      // Before 0.3.0 the JSON is process's second parameter; from 0.3.0 the guest asks for it.
      const withJson = /^0\.[0-2]\./.test(version);
      const call = (fn) => {
        try {
          return { ok: fn() };
        } catch (e) {
          if (e && 'payload' in e) return { err: String(e.payload) }; // result::err
          return { trap: String(e?.message ?? e) };
        }
      };
      return {
        init: (config) => {
          const r = call(() => f.init(config));
          return r.err !== undefined || r.trap !== undefined ? r : { ok: true };
        },
        process: (ev, json) => {
          let r;
          if (withJson) r = call(() => f.process(eventFields(ev), json));
          else {
            current = json;
            asked = false;
            r = call(() => f.process(eventFields(ev)));
            current = '';
            if (asked) mod.eventCalls++;
          }
          if (r.err !== undefined || r.trap !== undefined) return r;
          const v = r.ok;
          if (v?.tag === 'keep') return { verdict: 'keep' };
          if (v?.tag === 'drop') return { verdict: 'drop' };
          if (v?.tag === 'replace') return { verdict: 'replace', json: v.val };
          // Contract 0.2.0: a list of {tag, val}; set-extra's value is JSON text.
          if (v?.tag === 'edit' && Array.isArray(v.val)) return { verdict: 'edit', edits: v.val.map((e) => [e.tag, e.val]), extraAsText: true };
          return { trap: `unexpected verdict ${JSON.stringify(v)}` };
        },
      };
    },
  };
  return mod;
}

async function loadCore(file, bytes) {
  const module = await WebAssembly.compile(bytes);
  const name = path.basename(file);
  const imports = WebAssembly.Module.imports(module);
  for (const i of imports) {
    const allowed = (i.module === 'event_collector' && i.name === 'log') || i.module === 'wasi_snapshot_preview1';
    if (!allowed) throw new Error(`${name}: import ${i.module}.${i.name} is not allowed by the core-module ABI`);
  }
  const exps = new Set(WebAssembly.Module.exports(module).map((e) => e.name));
  for (const e of ['memory', 'alloc', 'process']) {
    if (!exps.has(e)) throw new Error(`${name}: the core-module ABI requires the export "${e}"`);
  }
  const usesWasi = imports.some((i) => i.module === 'wasi_snapshot_preview1');
  const { WASI } = await import('node:wasi');
  return {
    kind: 'core module',
    async instantiate() {
      let memory;
      const text = (ptr, len) => new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array(memory.buffer, ptr, len));
      const imp = {
        event_collector: { log: (level, ptr, len) => hostLog(name, LEVELS[level] ?? `level ${level}`, text(ptr, len)) },
      };
      let wasi;
      if (usesWasi) {
        wasi = new WASI({ version: 'preview1', args: [], env: {}, preopens: {}, returnOnExit: true });
        imp.wasi_snapshot_preview1 = wasi.wasiImport;
      }
      const instance = await WebAssembly.instantiate(module, imp);
      const x = instance.exports;
      memory = x.memory;
      if (wasi) {
        if (x._initialize) wasi.initialize(instance);
      } else if (x._initialize) {
        x._initialize();
      }
      // One call of the ABI: alloc, write, call, read the packed result.
      const abiCall = (fn, input) => {
        const bytes = new TextEncoder().encode(input);
        const ptr = x.alloc(bytes.length);
        if (bytes.length > 0 && ptr === 0) return { trap: 'alloc returned 0' };
        new Uint8Array(memory.buffer, ptr >>> 0, bytes.length).set(bytes);
        const r = BigInt.asUintN(64, fn(ptr, bytes.length));
        if (r === 0n) return { zero: true };
        const outPtr = Number(r >> 32n);
        const outLen = Number(r & 0xffffffffn);
        if (outPtr + outLen > memory.buffer.byteLength) return { trap: `result ${outPtr}+${outLen} is outside memory` };
        return { out: text(outPtr, outLen) };
      };
      const guard = (fn) => {
        try {
          return fn();
        } catch (e) {
          return { trap: String(e?.message ?? e) };
        }
      };
      return {
        init: (config) =>
          guard(() => {
            if (!x.init) return { ok: true };
            const r = abiCall(x.init, config);
            if (r.trap) return r;
            return r.zero ? { ok: true } : { err: r.out };
          }),
        process: (_ev, json) =>
          guard(() => {
            const r = abiCall(x.process, json);
            if (r.trap) return r;
            if (r.zero) return { verdict: 'keep' };
            let v;
            try {
              v = JSON.parse(r.out);
            } catch (e) {
              return { trap: `result is not JSON: ${r.out.slice(0, 200)}` };
            }
            if (isObj(v) && typeof v.error === 'string') return { err: v.error };
            if (v?.verdict === 'keep' || v?.verdict === 'drop') return { verdict: v.verdict };
            if (v?.verdict === 'replace' && isObj(v.event) && !('edits' in v)) return { verdict: 'replace', json: JSON.stringify(v.event) };
            // {"verdict":"edit","edits":[{"set-label":["k","v"]}, ...]}: one key per edit, extra values as JSON.
            if (v?.verdict === 'edit' && Array.isArray(v.edits) && !('event' in v)) {
              if (!v.edits.every((e) => isObj(e) && Object.keys(e).length === 1)) return { trap: `an edit is not {"name": args}: ${r.out.slice(0, 200)}` };
              return { verdict: 'edit', edits: v.edits.map((e) => Object.entries(e)[0]), extraAsText: false };
            }
            return { trap: `result is not a verdict: ${r.out.slice(0, 200)}` };
          }),
      };
    },
  };
}

async function loadModule(file) {
  const bytes = fs.readFileSync(file);
  return isComponent(bytes) ? loadComponent(file, bytes) : loadCore(file, bytes);
}

// ---- running vectors -----------------------------------------------------------------------

/** True when every key of `want` is in `got` with a matching value (objects recursively). */
function subset(want, got) {
  if (isObj(want)) return isObj(got) && Object.keys(want).every((k) => k in got && subset(want[k], got[k]));
  return JSON.stringify(want) === JSON.stringify(got);
}

/** Vector lines of a .jsonl file; a `// comment` line names the vector after it. */
function readJsonl(file) {
  const out = [];
  let comment;
  fs.readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      const t = line.trim();
      if (t === '') return;
      if (t.startsWith('//')) {
        comment = t.slice(2).trim();
        return;
      }
      let v;
      try {
        v = JSON.parse(t);
      } catch (e) {
        throw new Error(`${file}:${i + 1}: not JSON: ${e.message}`);
      }
      out.push({ n: i + 1, v, id: v.id ?? comment });
      comment = undefined;
    });
  return out;
}

class Instances {
  constructor(mod) {
    this.mod = mod;
    this.byConfig = new Map();
    this.instantiations = 0;
  }
  /** The instance for `config` (a JSON string), instantiated and initialized on first use. */
  async get(config) {
    let e = this.byConfig.get(config);
    if (!e) {
      const inst = await this.mod.instantiate();
      this.instantiations++;
      const r = inst.init(config);
      e = { inst, init: r };
      this.byConfig.set(config, e);
    }
    return e;
  }
  drop(config) {
    this.byConfig.delete(config); // after a trap: a new instance next time
  }
}

async function runFile(mod, file, defaultConfig, stats) {
  const instances = new Instances(mod);
  const initOnly = file.endsWith('.init-test.jsonl');
  let passed = 0;
  let failed = 0;
  const fail = (n, id, msg) => {
    failed++;
    console.log(`  FAIL ${path.basename(file)}:${n}${id ? ` (${id})` : ''}: ${msg}`);
  };
  for (const { n, v, id } of readJsonl(file)) {
    const config = 'config' in v ? JSON.stringify(v.config) : defaultConfig;
    if (initOnly) {
      const inst = await mod.instantiate();
      const r = inst.init(config);
      const wantErr = isObj(v.expect) && v.expect.error === true;
      if (r.trap) fail(n, id, `init trapped: ${r.trap}`);
      else if (wantErr && !r.err) fail(n, id, 'init succeeded, want an error');
      else if (!wantErr && r.err !== undefined) fail(n, id, `init failed: ${r.err}`);
      else passed++;
      if (r.err && verbose) console.error(`    init error (${id}): ${r.err}`);
      continue;
    }
    const { inst, init } = await instances.get(config);
    if (!init.ok) {
      fail(n, id, `init failed: ${init.err ?? init.trap}`);
      instances.drop(config);
      continue;
    }
    const json = JSON.stringify(v.input);
    const t0 = process.hrtime.bigint();
    const r = inst.process(v.input, json);
    stats.calls.push(Number(process.hrtime.bigint() - t0) / 1e3);
    if (r.trap) instances.drop(config);
    // An invalid replacement or edit is a failure, as on the host (it re-validates).
    let out;
    // An empty edit list is a keep, as on the host.
    if (r.verdict === 'edit' && r.edits.length === 0) r.verdict = 'keep';
    if (r.verdict === 'edit') {
      const e = applyEdits(v.input, r.edits, r.extraAsText);
      if (e.invalid) r.invalid = e.invalid;
      else out = e.out;
    }
    if (r.verdict === 'replace') {
      try {
        out = JSON.parse(r.json);
      } catch (e) {
        r.invalid = `replace is not JSON: ${e.message}`;
      }
      const bad = r.invalid ? null : checkNormalized(out);
      if (bad) r.invalid = `replace is not a valid normalized event: ${bad}`;
    }
    const failure = r.trap !== undefined ? `trap (${r.trap})` : r.err !== undefined ? `error (${r.err})` : r.invalid;
    const got = failure ?? r.verdict;
    const want = v.expect;
    if (want === 'keep' || want === 'drop') {
      if (!failure && r.verdict === want) passed++;
      else fail(n, id, `got ${got}, want ${want}`);
    } else if (isObj(want) && want.error === true) {
      if (failure) passed++;
      else fail(n, id, `got ${got}, want an error`);
    } else if (isObj(want) && 'replace' in want) {
      // An edit verdict passes a replace vector when the edited event matches.
      if (failure || (r.verdict !== 'replace' && r.verdict !== 'edit')) fail(n, id, `got ${got}, want replace`);
      else if (!subset(want.replace, out)) {
        fail(n, id, `replace does not match\n      want (subset): ${JSON.stringify(want.replace)}\n      got: ${JSON.stringify(out)}`);
      } else passed++;
    } else {
      fail(n, id, `bad vector: expect must be "keep", "drop", {"replace": ...} or {"error": true}`);
    }
  }
  stats.instantiations += instances.instantiations;
  return { passed, failed };
}

async function testModule(moduleFile, vectorFiles, defaultConfig) {
  const t0 = Date.now();
  const mod = await loadModule(moduleFile);
  const loadMs = Date.now() - t0;
  const stats = { calls: [], instantiations: 0 };
  let passed = 0;
  let failed = 0;
  for (const f of vectorFiles) {
    const r = await runFile(mod, f, defaultConfig, stats);
    passed += r.passed;
    failed += r.failed;
  }
  const c = stats.calls.sort((a, b) => a - b);
  const med = c.length ? c[Math.floor(c.length / 2)] : 0;
  const kind = mod.version ? `${mod.kind} ${mod.version}` : mod.kind;
  // Contract 0.3.0: how many calls paid for the event JSON (a filter deciding from the fields: none).
  const asked = mod.version && !/^0\.[0-2]\./.test(mod.version) ? `, host.event in ${mod.eventCalls} of ${c.length} calls` : '';
  console.log(`${path.basename(moduleFile)} (${kind}${asked}, load ${loadMs} ms, median process ${med.toFixed(1)} µs in Node): ${passed} passed, ${failed} failed`);
  return { passed, failed };
}

// ---- generating vectors from the shared inputs ----------------------------------------------

/** Deep merge where `null` sets null (unlike RFC 7386, which deletes). */
function patch(base, p) {
  if (!isObj(p)) return structuredClone(p);
  const out = isObj(base) ? structuredClone(base) : {};
  for (const [k, v] of Object.entries(p)) out[k] = isObj(v) && isObj(out[k]) ? patch(out[k], v) : structuredClone(v);
  return out;
}

function filterDirs() {
  return fs
    .readdirSync(FILTERS, { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(FILTERS, d.name, 'expect.json')))
    .map((d) => d.name)
    .sort();
}

function generate(name, inputs) {
  const spec = JSON.parse(fs.readFileSync(path.join(FILTERS, name, 'expect.json'), 'utf8'));
  const byId = new Map(inputs.map(({ v }) => [v.id, v.input]));
  const lines = [];
  const missing = [...byId.keys()].filter((id) => !(id in (spec.conformance ?? {})));
  if (missing.length) throw new Error(`${name}/expect.json: no expectation for the shared input(s) ${missing.join(', ')}`);
  for (const id of Object.keys(spec.conformance)) {
    if (!byId.has(id)) throw new Error(`${name}/expect.json: "${id}" is not in conformance/inputs.jsonl`);
  }
  for (const [id, input] of byId) {
    const v = {};
    if (spec.config !== undefined) v.config = spec.config;
    v.input = input;
    v.expect = spec.conformance[id];
    lines.push([`conformance/${id}`, v]);
  }
  for (const c of spec.cases ?? []) {
    if (!byId.has(c.base)) throw new Error(`${name}/expect.json: case "${c.id}": base "${c.base}" is not a shared input`);
    const v = {};
    const config = 'config' in c ? c.config : spec.config;
    if (config !== undefined) v.config = config;
    v.input = patch(byId.get(c.base), c.patch ?? {});
    const bad = checkNormalized(v.input);
    if (bad) throw new Error(`${name}/expect.json: case "${c.id}": the patched input is not a normalized event: ${bad}`);
    v.expect = c.expect;
    lines.push([c.id, v]);
  }
  const header = `// Generated by \`node filters/conformance/run.mjs gen\` from conformance/inputs.jsonl and ${name}/expect.json: edit those.\n`;
  const body = (ls) => ls.map(([id, v]) => `// ${id}\n${JSON.stringify(v)}\n`).join('');
  const out = { [`${name}.test.jsonl`]: header + body(lines) };
  // The suite's config on its own, for `event-collector filter test --config`.
  out[`${name}.config.json`] = JSON.stringify(spec.config ?? {}, null, 2) + '\n';
  if (spec.init?.length) {
    out[`${name}.init-test.jsonl`] = header + body(spec.init.map((v, i) => [v.id ?? `init-${i + 1}`, { config: v.config, expect: v.expect }]));
  }
  return out;
}

// The contract modules (conformance/contract/*.wat): what each must give for every shared input.
const CONTRACT_DIR = path.join(HERE, 'contract');
const ERROR = { error: true };
// What contract/edit-verdicts.wat answers for every event (keep the two in step).
const EDIT_VERDICTS = [
  ['set-label', ['conformance', 'a']],
  ['set-label', ['conformance', 'b']],
  ['set-label-if-absent', ['conformance', 'c']],
  ['set-label-if-absent', ['if-absent', 'set']],
  ['remove-label', 'no-such-label'],
  ['set-annotation', ['checked-by', 'edit-verdicts']],
  ['remove-annotation', 'no-such-annotation'],
  ['set-extra', ['edit', { n: 1, list: [true, null, 'x'] }]],
  ['set-extra', ['gone', 1]],
  ['remove-extra', 'gone'],
  ['set-message', 'edited by the contract module'],
];
const CONTRACT = {
  'trap': () => ERROR,
  'not-json': () => ERROR,
  'out-of-bounds': () => ERROR,
  'invalid-replace': () => ERROR,
  'unknown-verdict': () => ERROR,
  'echo-replace': (input) => ({ replace: input }),
  'edit-verdicts': (input) => ({ replace: applyEdits(input, EDIT_VERDICTS, false).out }),
  'invalid-edits': () => ERROR,
  'explicit-verdicts': (input) => (Buffer.byteLength(JSON.stringify(input)) < 1000 ? 'keep' : 'drop'),
  'initialize-then-init': () => 'keep',
};
const CONTRACT_INIT = {
  'explicit-verdicts': [{ config: {}, expect: 'ok' }, { config: { a: 1 }, expect: ERROR }],
};

function generateContract(inputs) {
  const out = {};
  for (const [name, f] of Object.entries(CONTRACT)) {
    const header = `// Generated by \`node filters/conformance/run.mjs gen\` from conformance/inputs.jsonl and the CONTRACT table in run.mjs.\n`;
    out[path.join(CONTRACT_DIR, `${name}.test.jsonl`)] =
      header + inputs.map(({ v }) => `// conformance/${v.id}\n${JSON.stringify({ input: v.input, expect: f(v.input) })}\n`).join('');
    if (CONTRACT_INIT[name]) {
      out[path.join(CONTRACT_DIR, `${name}.init-test.jsonl`)] =
        header + CONTRACT_INIT[name].map((v, i) => `// init-${i + 1}\n${JSON.stringify(v)}\n`).join('');
    }
  }
  return out;
}

/** Builds conformance/contract/*.wasm from the .wat sources (when stale) with wasm-tools. */
function buildContract() {
  const tool = fs.existsSync(path.join(EC_CACHE, 'cargo-tools/bin/wasm-tools')) ? path.join(EC_CACHE, 'cargo-tools/bin/wasm-tools') : 'wasm-tools';
  const out = [];
  for (const name of Object.keys(CONTRACT)) {
    const wat = path.join(CONTRACT_DIR, `${name}.wat`);
    const wasm = path.join(CONTRACT_DIR, `${name}.wasm`);
    if (!fs.existsSync(wasm) || fs.statSync(wasm).mtimeMs < fs.statSync(wat).mtimeMs) {
      execFileSync(tool, ['parse', wat, '-o', wasm], { stdio: 'inherit' });
    }
    out.push(name);
  }
  return out;
}

function gen(check) {
  const inputs = readJsonl(path.join(HERE, 'inputs.jsonl'));
  for (const { n, v } of inputs) {
    const bad = checkNormalized(v.input);
    if (bad) throw new Error(`inputs.jsonl:${n} (${v.id}): not a normalized event: ${bad}`);
  }
  let stale = 0;
  const files = [];
  for (const name of filterDirs()) {
    for (const [file, text] of Object.entries(generate(name, inputs))) files.push([path.join(FILTERS, name, file), text]);
  }
  files.push(...Object.entries(generateContract(inputs)));
  {
    for (const [p, text] of files) {
      const file = path.relative(FILTERS, p);
      const old = fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : null;
      if (old === text) continue;
      if (check) {
        console.log(`stale: filters/${file} (run: node filters/conformance/run.mjs gen)`);
        stale++;
      } else {
        fs.writeFileSync(p, text);
        console.log(`wrote filters/${file}`);
      }
    }
  }
  return stale;
}

// ---- main ------------------------------------------------------------------------------------

async function main() {
  const args = process.argv.slice(2);
  verbose = args.includes('--verbose') || args.includes('-v');
  const rest = args.filter((a) => a !== '--verbose' && a !== '-v');
  const cmd = rest.shift();
  if (cmd === 'gen') {
    const stale = gen(rest.includes('--check'));
    process.exit(stale ? 1 : 0);
  }
  if (cmd === 'test') {
    let config = '{}';
    const ci = rest.indexOf('--config');
    if (ci >= 0) {
      config = JSON.stringify(JSON.parse(fs.readFileSync(rest[ci + 1], 'utf8')));
      rest.splice(ci, 2);
    }
    const [moduleFile, ...vectors] = rest;
    if (!moduleFile || vectors.length === 0) throw new Error('usage: run.mjs test MODULE.wasm VECTORS.jsonl... [--config C.json]');
    const r = await testModule(moduleFile, vectors, config);
    console.log(`${r.passed} passed, ${r.failed} failed`);
    process.exit(r.failed ? 1 : 0);
  }
  if (cmd === 'contract') {
    let passed = 0;
    let failed = 0;
    for (const name of buildContract()) {
      const vectors = fs.readdirSync(CONTRACT_DIR)
        .filter((f) => f === `${name}.test.jsonl` || f === `${name}.init-test.jsonl`)
        .map((f) => path.join(CONTRACT_DIR, f));
      const r = await testModule(path.join(CONTRACT_DIR, `${name}.wasm`), vectors, '{}');
      passed += r.passed;
      failed += r.failed;
    }
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
  }
  if (cmd === 'all') {
    const names = rest.length ? rest : filterDirs();
    let passed = 0;
    let failed = 0;
    for (const name of names) {
      const dir = path.join(FILTERS, name);
      const wasm = path.join(dir, `${name}.wasm`);
      if (!fs.existsSync(wasm)) {
        console.log(`${name}: not built (${path.relative(process.cwd(), wasm)} missing): run its build.sh`);
        failed++;
        continue;
      }
      const vectors = fs
        .readdirSync(dir)
        .filter((f) => f.endsWith('.test.jsonl') || f.endsWith('.init-test.jsonl'))
        .sort()
        .map((f) => path.join(dir, f));
      try {
        const r = await testModule(wasm, vectors, '{}');
        passed += r.passed;
        failed += r.failed;
      } catch (e) {
        console.log(`${name}: ${e.stack ?? e}`);
        failed++;
      }
    }
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
  }
  console.error('usage: run.mjs test MODULE.wasm VECTORS.jsonl... [--config C.json] [--verbose] | all [FILTER...] | contract | gen [--check]');
  process.exit(2);
}

main().catch((e) => {
  console.error(e.stack ?? String(e));
  process.exit(2);
});
