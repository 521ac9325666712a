// assemblyscript-max-message: drops events whose text (`message`, else `note`)
// is longer than `max_length` Unicode code points (config {"max_length": N},
// default 1024). Events without text are kept.
//
// A core WebAssembly module for event-collector's core-module ABI (see
// guest-sdk/README.md). It reads the event JSON in place, byte by byte,
// without building strings: a small scanner finds the top-level key and counts
// the code points of its string value (escapes and surrogate pairs included).

// ---- host import ----------------------------------------------------------

@external("event_collector", "log")
declare function hostLog(level: i32, ptr: usize, len: i32): void;

const LEVEL_INFO: i32 = 2;
const LEVEL_ERROR: i32 = 4;

function log(level: i32, msg: string): void {
  const buf = String.UTF8.encode(msg);
  hostLog(level, changetype<usize>(buf), buf.byteLength);
}

// Replaces AssemblyScript's default `env.abort` import (asc --use abort=...):
// the module needs no import but event_collector.log.
function abortHandler(message: string | null, fileName: string | null, line: u32, column: u32): void {
  const m = message !== null ? message : "";
  const f = fileName !== null ? fileName : "";
  log(LEVEL_ERROR, "abort: " + m + " at " + f + ":" + line.toString() + ":" + column.toString());
  unreachable();
}

// ---- the core-module ABI -------------------------------------------------------

// The last result; referenced here so the GC keeps it until the next call.
let out: ArrayBuffer = new ArrayBuffer(0);

function pack(buf: ArrayBuffer): i64 {
  out = buf;
  return (i64(changetype<usize>(buf)) << 32) | i64(buf.byteLength);
}

function error(msg: string): i64 {
  // Our messages are ASCII without quotes or backslashes: no escaping needed.
  return pack(String.UTF8.encode('{"error":"' + msg + '"}'));
}

// Host-visible allocator: unmanaged memory, freed by init/process when done.
export function alloc(size: i32): i32 {
  return i32(heap.alloc(usize(size < 1 ? 1 : size)));
}

// ---- a minimal JSON scanner over UTF-8 bytes in memory ---------------------

let p: usize = 0;
let end: usize = 0;

function peek(): i32 {
  return p < end ? i32(load<u8>(p)) : -1;
}

function ws(): void {
  while (p < end) {
    const c = load<u8>(p);
    if (c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09) p++;
    else break;
  }
}

// At a '"': moves past the closing quote. False if unterminated.
function skipString(): bool {
  p++;
  while (p < end) {
    const c = load<u8>(p);
    if (c == 0x5c) { p += 2; continue; } // backslash: skip the escaped char
    p++;
    if (c == 0x22) return true;
  }
  return false;
}

// Skips one value of any type. False on malformed input.
function skipValue(): bool {
  ws();
  const c = peek();
  if (c == 0x22) return skipString();
  if (c == 0x7b || c == 0x5b) {
    // Objects and arrays: count brackets, skipping strings.
    let depth = 0;
    while (p < end) {
      const d = load<u8>(p);
      if (d == 0x22) { if (!skipString()) return false; continue; }
      p++;
      if (d == 0x7b || d == 0x5b) depth++;
      else if (d == 0x7d || d == 0x5d) { depth--; if (depth == 0) return true; }
    }
    return false;
  }
  // Number, true, false, null: up to the next delimiter.
  const start = p;
  while (p < end) {
    const d = load<u8>(p);
    if (d == 0x2c || d == 0x7d || d == 0x5d || d == 0x20 || d == 0x0a || d == 0x0d || d == 0x09) break;
    p++;
  }
  return p > start;
}

// True when the raw key bytes [s, e) equal the ASCII `lit`.
function keyIs(s: usize, e: usize, lit: string): bool {
  if (i32(e - s) != lit.length) return false;
  for (let i = 0; i < lit.length; i++) {
    if (i32(load<u8>(s + usize(i))) != lit.charCodeAt(i)) return false;
  }
  return true;
}

function hex4(at: usize): i32 {
  let v = 0;
  for (let i: usize = 0; i < 4; i++) {
    const c = i32(load<u8>(at + i));
    let d = -1;
    if (c >= 0x30 && c <= 0x39) d = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
    else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
    if (d < 0) return -1;
    v = (v << 4) | d;
  }
  return v;
}

// At a '"': the number of code points in the string, moving past it; -1 if malformed.
function countString(): i32 {
  p++;
  let n = 0;
  while (p < end) {
    const c = load<u8>(p);
    if (c == 0x22) { p++; return n; }
    if (c == 0x5c) {
      if (p + 1 >= end) return -1;
      if (load<u8>(p + 1) == 0x75) { // \uXXXX
        if (p + 6 > end) return -1;
        const u = hex4(p + 2);
        if (u < 0) return -1;
        p += 6;
        // A high surrogate followed by an escaped low one is one code point.
        if (u >= 0xd800 && u <= 0xdbff && p + 6 <= end && load<u8>(p) == 0x5c && load<u8>(p + 1) == 0x75) {
          const lo = hex4(p + 2);
          if (lo >= 0xdc00 && lo <= 0xdfff) p += 6;
        }
      } else {
        p += 2;
      }
      n++;
      continue;
    }
    // Count UTF-8 lead bytes, not continuation bytes (10xxxxxx).
    if ((c & 0xc0) != 0x80) n++;
    p++;
  }
  return -1;
}

// Positions p at the value of top-level `key` in the object at [ptr, ptr+len).
// 1: found, 0: absent, -1: malformed.
function findTopLevel(ptr: usize, len: usize, key: string): i32 {
  p = ptr;
  end = ptr + len;
  ws();
  if (peek() != 0x7b) return -1;
  p++;
  while (true) {
    ws();
    const c = peek();
    if (c == 0x7d) return 0;
    if (c != 0x22) return -1;
    const ks = p + 1;
    if (!skipString()) return -1;
    const ke = p - 1;
    ws();
    if (peek() != 0x3a) return -1;
    p++;
    ws();
    if (keyIs(ks, ke, key)) return 1;
    if (!skipValue()) return -1;
    ws();
    const d = peek();
    if (d == 0x2c) { p++; continue; }
    if (d == 0x7d) return 0;
    return -1;
  }
}

// ---- the filter -------------------------------------------------------------------

let maxLength: i32 = 1024;

// Config: {"max_length": N} (N a non-negative integer), or {} for the default.
export function init(ptr: i32, len: i32): i64 {
  const r = parseConfig(usize(ptr), usize(len));
  heap.free(usize(ptr));
  if (r == 0) log(LEVEL_INFO, "dropping events with more than " + maxLength.toString() + " code points of text");
  return r;
}

function parseConfig(ptr: usize, len: usize): i64 {
  p = ptr;
  end = ptr + len;
  ws();
  if (peek() != 0x7b) return error("invalid filter config: not a JSON object");
  p++;
  let first = true;
  while (true) {
    ws();
    if (peek() == 0x7d) return 0;
    if (!first) {
      if (peek() != 0x2c) return error("invalid filter config: malformed JSON");
      p++;
      ws();
    }
    first = false;
    if (peek() != 0x22) return error("invalid filter config: malformed JSON");
    const ks = p + 1;
    if (!skipString()) return error("invalid filter config: malformed JSON");
    const ke = p - 1;
    ws();
    if (peek() != 0x3a) return error("invalid filter config: malformed JSON");
    p++;
    ws();
    if (!keyIs(ks, ke, "max_length")) return error("invalid filter config: unknown key (only max_length is allowed)");
    let v: i64 = 0;
    let digits = 0;
    while (p < end) {
      const c = i32(load<u8>(p));
      if (c < 0x30 || c > 0x39) break;
      v = v * 10 + i64(c - 0x30);
      if (v > 0x7fffffff) return error("invalid filter config: max_length is too large");
      digits++;
      p++;
    }
    if (digits == 0) return error("invalid filter config: max_length must be a non-negative integer");
    const c = peek();
    if (c == 0x2e || c == 0x65 || c == 0x45) return error("invalid filter config: max_length must be a non-negative integer");
    maxLength = i32(v);
  }
  return 0; // unreachable: the loop returns
}

// Returns 0 (keep), a packed {"verdict":"drop"}, or a packed {"error":...}.
export function process(ptr: i32, len: i32): i64 {
  const r = decide(usize(ptr), usize(len));
  heap.free(usize(ptr));
  return r;
}

const DROP = String.UTF8.encode('{"verdict":"drop"}');

function textLength(ptr: usize, len: usize, key: string): i32 {
  const f = findTopLevel(ptr, len, key);
  if (f < 0) return -2;
  if (f == 0) return -1; // absent
  const c = peek();
  if (c == 0x22) {
    const n = countString();
    return n < 0 ? -2 : n;
  }
  if (c == 0x6e) return -1; // null
  return -2;
}

function decide(ptr: usize, len: usize): i64 {
  let n = textLength(ptr, len, "message");
  if (n == -1) n = textLength(ptr, len, "note");
  if (n == -2) return error("not a normalized event: message/note is not a string or null");
  if (n > maxLength) return pack(DROP);
  return 0; // keep
}
