// c-reason-allowlist: keeps only events whose reason is in the configured list
// (config {"reasons": ["BackOff", ...]}); drops every other event, including
// those without a reason. Decides on the fields the host extracts, so it never
// parses the event JSON.
//
// Built with Debian clang 14 + wasi-libc (malloc, string functions: none of
// them imports WASI), `wit-bindgen c` for the bindings and
// `wasm-tools component new` for the component (see build.sh).

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event_filter.h"

// ---- the allowlist: a sorted array of owned strings -----------------------

typedef struct {
    char *ptr;
    size_t len;
} str_t;

static str_t *reasons = NULL;
static size_t n_reasons = 0;

static int str_cmp(const void *a, const void *b) {
    const str_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->ptr, y->ptr, n);
    if (c != 0) return c;
    return (x->len > y->len) - (x->len < y->len);
}

static bool allowed(const uint8_t *ptr, size_t len) {
    str_t key = {(char *)ptr, len};
    return bsearch(&key, reasons, n_reasons, sizeof(str_t), str_cmp) != NULL;
}

static void free_reasons(void) {
    for (size_t i = 0; i < n_reasons; i++) free(reasons[i].ptr);
    free(reasons);
    reasons = NULL;
    n_reasons = 0;
}

// ---- a small JSON reader, enough for {"reasons": ["a", "b"]} ---------------

typedef struct {
    const uint8_t *p, *end;
    const char *err;
} reader_t;

static void ws(reader_t *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) r->p++;
}

static bool expect(reader_t *r, uint8_t c) {
    ws(r);
    if (r->p < r->end && *r->p == c) {
        r->p++;
        return true;
    }
    return false;
}

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool hex4(reader_t *r, uint32_t *out) {
    if (r->end - r->p < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(r->p[i]);
        if (h < 0) return false;
        v = (v << 4) | (uint32_t)h;
    }
    r->p += 4;
    *out = v;
    return true;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

// Reads a JSON string (at its opening quote) into a fresh malloc'd UTF-8 buffer.
static bool read_string(reader_t *r, str_t *out) {
    ws(r);
    if (r->p >= r->end || *r->p != '"') { r->err = "expected a string"; return false; }
    r->p++;
    // Decoded text is never longer than the escaped source.
    const uint8_t *q = r->p;
    while (q < r->end && *q != '"') q += (*q == '\\') ? 2 : 1;
    if (q >= r->end) { r->err = "unterminated string"; return false; }
    char *buf = malloc((size_t)(q - r->p) + 1);
    if (!buf) { r->err = "out of memory"; return false; }
    size_t n = 0;
    while (r->p < r->end && *r->p != '"') {
        uint8_t c = *r->p++;
        if (c != '\\') { buf[n++] = (char)c; continue; }
        if (r->p >= r->end) break;
        uint8_t e = *r->p++;
        switch (e) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            case 'u': {
                uint32_t cp;
                if (!hex4(r, &cp)) { free(buf); r->err = "bad \\u escape"; return false; }
                if (cp >= 0xD800 && cp <= 0xDBFF && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
                    reader_t look = *r;
                    look.p += 2;
                    uint32_t lo;
                    if (hex4(&look, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        r->p = look.p;
                    }
                }
                n += put_utf8(buf + n, cp);  // 6 or 12 source bytes give at most 4
                break;
            }
            default: free(buf); r->err = "bad escape"; return false;
        }
    }
    r->p++;  // the closing quote
    buf[n] = 0;
    out->ptr = buf;
    out->len = n;
    return true;
}

static bool parse_reasons(reader_t *r) {
    if (!expect(r, '[')) { r->err = "\"reasons\" must be a list of strings"; return false; }
    size_t cap = 8;
    reasons = malloc(cap * sizeof(str_t));
    if (!reasons) { r->err = "out of memory"; return false; }
    if (expect(r, ']')) return true;
    do {
        if (n_reasons == cap) {
            cap *= 2;
            str_t *grown = realloc(reasons, cap * sizeof(str_t));
            if (!grown) { r->err = "out of memory"; return false; }
            reasons = grown;
        }
        if (!read_string(r, &reasons[n_reasons])) {
            if (!r->err || strcmp(r->err, "expected a string") == 0) r->err = "\"reasons\" must be a list of strings";
            return false;
        }
        n_reasons++;
    } while (expect(r, ','));
    if (!expect(r, ']')) { r->err = "\"reasons\" must be a list of strings"; return false; }
    qsort(reasons, n_reasons, sizeof(str_t), str_cmp);
    return true;
}

static bool parse_config(reader_t *r) {
    bool seen = false;
    if (!expect(r, '{')) { r->err = "not a JSON object"; return false; }
    if (!expect(r, '}')) {
        do {
            str_t key;
            if (!read_string(r, &key)) return false;
            bool is_reasons = key.len == 7 && memcmp(key.ptr, "reasons", 7) == 0;
            free(key.ptr);
            if (!is_reasons) { r->err = "unknown key (only \"reasons\" is allowed)"; return false; }
            if (seen) { r->err = "\"reasons\" given twice"; return false; }
            seen = true;
            if (!expect(r, ':')) { r->err = "malformed JSON"; return false; }
            if (!parse_reasons(r)) return false;
        } while (expect(r, ','));
        if (!expect(r, '}')) { r->err = "malformed JSON"; return false; }
    }
    ws(r);
    if (r->p != r->end) { r->err = "trailing characters after the config object"; return false; }
    if (!seen) { r->err = "\"reasons\" is required (a list of event reasons to keep)"; return false; }
    return true;
}

// ---- helpers for the generated bindings --------------------------------------

static void set_error(event_filter_string_t *err, const char *prefix, const char *msg) {
    size_t a = strlen(prefix), b = strlen(msg);
    uint8_t *buf = malloc(a + b);  // the host frees it (cabi_post_* / canonical ABI)
    memcpy(buf, prefix, a);
    memcpy(buf + a, msg, b);
    err->ptr = buf;
    err->len = a + b;
}

static void host_log(event_collector_filter_types_level_t level, const char *msg) {
    event_filter_string_t s;
    event_filter_string_set(&s, msg);
    event_collector_filter_host_log(level, &s);
}

// ---- the exports ----------------------------------------------------------------

bool exports_event_collector_filter_filter_init(event_filter_string_t *config, event_filter_string_t *err) {
    free_reasons();
    reader_t r = {config->ptr, config->ptr + config->len, NULL};
    bool ok = parse_config(&r);
    event_filter_string_free(config);
    if (!ok) {
        free_reasons();
        set_error(err, "invalid filter config: ", r.err ? r.err : "malformed JSON");
        return false;
    }
    host_log(EVENT_COLLECTOR_FILTER_TYPES_LEVEL_INFO, "reason allowlist loaded");
    return true;
}

bool exports_event_collector_filter_filter_process(exports_event_collector_filter_filter_event_fields_t *fields,
                                                   event_filter_string_t *event,
                                                   exports_event_collector_filter_filter_verdict_t *ret,
                                                   event_filter_string_t *err) {
    (void)err;
    ret->tag = allowed(fields->reason.ptr, fields->reason.len) ? EVENT_COLLECTOR_FILTER_TYPES_VERDICT_KEEP
                                                               : EVENT_COLLECTOR_FILTER_TYPES_VERDICT_DROP;
    exports_event_collector_filter_filter_event_fields_free(fields);
    event_filter_string_free(event);
    return true;
}
