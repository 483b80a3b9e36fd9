/*
 * Native parser for batches of DynamoDB export lines: full exports
 * ({"Item": {...}}) and incremental exports (change lines with Metadata,
 * Keys, NewImage, OldImage).
 *
 * Why it exists: Arrow's JSON reader spent half of the converter's CPU on
 * full exports (130-140 MB/s here), because it builds a general nested struct
 * for every attribute and type descriptor, and incremental exports were parsed
 * line by line in Python. This parser knows the format: it writes each
 * (attribute, type descriptor) straight into Arrow-layout buffers (validity
 * bitmap, int32 offsets, data), decodes base64, and turns maps and lists into
 * the same JSON text the Python paths produce, with the GIL released so the
 * converter's threads parse in parallel.
 *
 * It is deliberately narrow: anything it does not fully understand (invalid
 * JSON or UTF-8, an unknown or missing type descriptor, a duplicated
 * attribute or member, a value of the wrong JSON type, non-canonical base64,
 * nesting beyond 64 levels) makes `parse` return None, and the caller hands
 * the batch to the slower paths, which convert it or report the file and
 * line. Nested values whose JSON form needs Python's exact number rules (e.g.
 * 1E+20, 0.1000000000000000000001) or a dict's handling of duplicate keys are
 * listed as "fixups" (row, start, end of the value in the blob) for the
 * caller to convert with the per-line code.
 *
 * parse(blob: bytes, rows: int) -> list[tuple] | None, one tuple per column,
 * in the order Arrow's reader would give (attributes as first seen, then
 * type descriptors as first seen):
 *   (attribute: str, tag: str, null_count: int, validity: bytes | None,
 *    offsets: bytes | None, data: bytes | None, bits: bytes | None,
 *    value_offsets: bytes | None, elements: int, fixups: list | None)
 * parse(blob, rows, keys: tuple[str, ...]) reads change lines instead, with
 * the per-line path's rules: a row is its NewImage, plus Keys where NewImage
 * lacks a key attribute, or its Keys alone for a delete; it returns
 *   (columns as above, deleted: bytes (a bitmap), stamp_offsets: bytes,
 *    stamp_texts: bytes)   (Metadata.WriteTimestampMicros.N of each row)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { T_S, T_N, T_B, T_BOOL, T_NULL, T_SS, T_NS, T_BS, T_M, T_L, N_TAGS };
static const char *const TAG_NAMES[N_TAGS] = {"S",  "N",  "B",  "BOOL", "NULL",
                                              "SS", "NS", "BS", "M",    "L"};
#define MAX_DEPTH 64      /* DynamoDB allows 32 levels */
#define INLINE_KEYS 16       /* map keys compared pairwise; larger maps are sorted */
#define MAX_BLOB (1 << 30)  /* int32 offsets: far above the converter's ~4 MB batches */
#define MAX_KEY_MEMBERS 8   /* members of a change line's Keys (a table key has 1 or 2) */

/* ---- growable byte buffer ------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int buf_grow(Buf *b, size_t extra) {
    size_t need = b->len + extra, cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const void *s, size_t n) {
    if (n == 0) return 0; /* b->p may still be NULL: memcpy must not get it */
    if (b->len + n > b->cap && buf_grow(b, n)) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static inline int buf_byte(Buf *b, char c) {
    if (b->len + 1 > b->cap && buf_grow(b, 1)) return -1;
    b->p[b->len++] = c;
    return 0;
}

static inline int buf_i32(Buf *b, int32_t v) { return buf_put(b, &v, sizeof v); }

/* ---- columns and attributes ---------------------------------------------------------- */

typedef struct {
    int attr, tag, order;
    uint8_t *valid;    /* rows bits, LSB first */
    uint8_t *bits;     /* BOOL values */
    int32_t *offsets;  /* rows + 1: byte offsets (scalars) or element offsets (sets) */
    Py_ssize_t filled; /* rows whose end offset is written */
    Py_ssize_t present;
    Buf data;      /* value bytes (set elements' bytes for sets) */
    Buf voffsets;  /* sets: int32 byte offsets of the elements */
    int32_t elements;
    Buf fixups;    /* int64 triples: row, start, end (M and L only) */
} Column;

typedef struct {
    char *name;
    size_t len;
    uint64_t hash;
    int col[N_TAGS];
    Py_ssize_t last_row;
} Attribute;

typedef struct {
    const char *base;
    Py_ssize_t rows, row;
    Attribute *attrs;
    int nattrs, attrs_cap;
    int *table; /* open addressing over attrs, -1 = empty */
    int table_cap;
    Column *cols;
    int ncols, cols_cap;
    Buf key;     /* decoded attribute name */
    Buf text;    /* decoded number or base64 text */
    Buf scratch; /* JSON text of values that are only checked */
    Buf names;   /* the member names of a change line's Keys */
    int fix;     /* the current nested value needs Python */
    int oom;
    /* change lines (incremental exports) only */
    int nkeys;                /* the table's key attributes */
    const char **key_names;
    Py_ssize_t *key_lens;
    uint8_t *deleted;         /* rows bits: the change deleted the item */
    Column stamps;            /* Metadata.WriteTimestampMicros.N texts */
} Parser;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h;
}

static int table_insert(Parser *P, int index) {
    int mask = P->table_cap - 1;
    int slot = (int)(P->attrs[index].hash & (uint64_t)mask);
    while (P->table[slot] >= 0) slot = (slot + 1) & mask;
    P->table[slot] = index;
    return 0;
}

static int attribute_for(Parser *P, const char *name, size_t len) {
    uint64_t h = hash_bytes(name, len);
    if (P->table_cap) {
        int mask = P->table_cap - 1;
        for (int slot = (int)(h & (uint64_t)mask); P->table[slot] >= 0; slot = (slot + 1) & mask) {
            Attribute *a = &P->attrs[P->table[slot]];
            if (a->hash == h && a->len == len && memcmp(a->name, name, len) == 0)
                return P->table[slot];
        }
    }
    if (P->nattrs == P->attrs_cap) {
        int cap = P->attrs_cap ? P->attrs_cap * 2 : 32;
        Attribute *attrs = realloc(P->attrs, sizeof(Attribute) * (size_t)cap);
        if (!attrs) return -1;
        P->attrs = attrs;
        P->attrs_cap = cap;
    }
    Attribute *a = &P->attrs[P->nattrs];
    a->name = malloc(len ? len : 1);
    if (!a->name) return -1;
    memcpy(a->name, name, len);
    a->len = len;
    a->hash = h;
    a->last_row = -1;
    for (int t = 0; t < N_TAGS; t++) a->col[t] = -1;
    int index = P->nattrs++;
    if (P->nattrs * 2 > P->table_cap) { /* keep the table at most half full */
        int cap = P->table_cap ? P->table_cap * 2 : 64;
        int *table = malloc(sizeof(int) * (size_t)cap);
        if (!table) return -1;
        free(P->table);
        P->table = table;
        P->table_cap = cap;
        memset(table, 0xff, sizeof(int) * (size_t)cap);
        for (int i = 0; i < P->nattrs; i++) table_insert(P, i);
    } else {
        table_insert(P, index);
    }
    return index;
}

static void column_free(Column *c) {
    free(c->valid);
    free(c->bits);
    free(c->offsets);
    free(c->data.p);
    free(c->voffsets.p);
    free(c->fixups.p);
}

static int column_init(Column *c, int tag, Py_ssize_t rows) {
    memset(c, 0, sizeof *c);
    c->tag = tag;
    size_t bitmap = (size_t)(rows + 7) / 8;
    c->valid = calloc(bitmap ? bitmap : 1, 1);
    if (!c->valid) return -1;
    if (tag == T_BOOL) {
        c->bits = calloc(bitmap ? bitmap : 1, 1);
        if (!c->bits) return -1;
    }
    if (tag != T_BOOL && tag != T_NULL) {
        c->offsets = calloc((size_t)rows + 1, sizeof(int32_t));
        if (!c->offsets) return -1;
    }
    if (tag == T_SS || tag == T_NS || tag == T_BS) {
        if (buf_i32(&c->voffsets, 0)) return -1;
    }
    return 0;
}

static Column *column_for(Parser *P, int attr, int tag) {
    int index = P->attrs[attr].col[tag];
    if (index >= 0) return &P->cols[index];
    if (P->ncols == P->cols_cap) {
        int cap = P->cols_cap ? P->cols_cap * 2 : 32;
        Column *cols = realloc(P->cols, sizeof(Column) * (size_t)cap);
        if (!cols) return NULL;
        P->cols = cols;
        P->cols_cap = cap;
    }
    Column *c = &P->cols[P->ncols];
    if (column_init(c, tag, P->rows)) {
        column_free(c); /* not counted in ncols: parser_free would miss it */
        return NULL;
    }
    c->attr = attr;
    c->order = P->ncols;
    P->attrs[attr].col[tag] = P->ncols++;
    return c;
}


/* Offsets of rows [filled, row) as empty; the row's start is then offsets[row]. */
static inline void pad_offsets(Column *c, Py_ssize_t row) {
    int32_t end = c->offsets[c->filled];
    while (c->filled < row) c->offsets[++c->filled] = end;
}

static inline void end_row(Column *c, Py_ssize_t row, int32_t end) {
    c->offsets[row + 1] = end;
    c->filled = row + 1;
    c->valid[row >> 3] |= (uint8_t)(1u << (row & 7));
    c->present++;
}

/* ---- JSON lexing ---------------------------------------------------------------------- */

static inline const char *ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    return p;
}

static inline const char *expect(const char *p, const char *e, char c) {
    p = ws(p, e);
    return (p < e && *p == c) ? ws(p + 1, e) : NULL;
}

/* Length of one valid UTF-8 sequence starting with a byte >= 0x80, or 0. */
static int utf8_len(const unsigned char *p, const unsigned char *e) {
    unsigned char c = p[0];
#define CONT(i) (p + (i) < e && (p[i] & 0xC0) == 0x80)
    if (c >= 0xC2 && c <= 0xDF) return CONT(1) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (!(CONT(1) && CONT(2))) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && p[1] > 0x9F) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (!(CONT(1) && CONT(2) && CONT(3))) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;
        if (c == 0xF4 && p[1] > 0x8F) return 0;
        return 4;
    }
#undef CONT
    return 0;
}

static int hex4(const char *p, const char *e, unsigned *out) {
    if (e - p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* One escape after the backslash at p[-1]: its code point, p moved past it; NULL if invalid. */
static const char *escape(const char *p, const char *e, unsigned *cp) {
    if (p >= e) return NULL;
    switch (*p) {
    case '"': *cp = '"'; return p + 1;
    case '\\': *cp = '\\'; return p + 1;
    case '/': *cp = '/'; return p + 1;
    case 'b': *cp = '\b'; return p + 1;
    case 'f': *cp = '\f'; return p + 1;
    case 'n': *cp = '\n'; return p + 1;
    case 'r': *cp = '\r'; return p + 1;
    case 't': *cp = '\t'; return p + 1;
    case 'u': {
        unsigned hi, lo;
        if (hex4(p + 1, e, &hi)) return NULL;
        p += 5;
        if (hi >= 0xDC00 && hi <= 0xDFFF) return NULL; /* lone low surrogate */
        if (hi >= 0xD800 && hi <= 0xDBFF) {
            if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, e, &lo)) return NULL;
            if (lo < 0xDC00 || lo > 0xDFFF) return NULL;
            *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            return p + 6;
        }
        *cp = hi;
        return p;
    }
    default: return NULL;
    }
}

static int put_utf8(Buf *b, unsigned cp) {
    char s[4];
    size_t n;
    if (cp < 0x80) { s[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12));
        s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        s[0] = (char)(0xF0 | (cp >> 18));
        s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_put(b, s, n);
}

/* Code point as orjson writes it inside a JSON string. */
static int put_json_char(Buf *b, unsigned cp) {
    static const char hex[] = "0123456789abcdef";
    switch (cp) {
    case '"': return buf_put(b, "\\\"", 2);
    case '\\': return buf_put(b, "\\\\", 2);
    case '\b': return buf_put(b, "\\b", 2);
    case '\f': return buf_put(b, "\\f", 2);
    case '\n': return buf_put(b, "\\n", 2);
    case '\r': return buf_put(b, "\\r", 2);
    case '\t': return buf_put(b, "\\t", 2);
    default: break;
    }
    if (cp < 0x20) {
        char s[6] = {'\\', 'u', '0', '0', hex[cp >> 4], hex[cp & 15]};
        return buf_put(b, s, 6);
    }
    return put_utf8(b, cp);
}

/*
 * The JSON string at p (at its opening quote): decoded into `out` (as_json = 0),
 * or re-written as orjson writes it, quotes included (as_json = 1). Returns the
 * position after the closing quote; NULL for invalid JSON or UTF-8.
 */
static const char *string_at(Parser *P, const char *p, const char *e, Buf *out, int as_json) {
    if (p >= e || *p != '"') return NULL;
    p++;
    if (as_json && buf_byte(out, '"')) goto oom;
    for (;;) {
        const char *run = p;
        unsigned char c;
        for (;;) { /* a run of bytes copied as they are: plain ASCII and valid UTF-8 */
            while (p < e) {
                c = (unsigned char)*p;
                if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
                p++;
            }
            if (p >= e) return NULL;
            c = (unsigned char)*p;
            if (c < 0x80) break;
            int n = utf8_len((const unsigned char *)p, (const unsigned char *)e);
            if (!n) return NULL;
            p += n;
        }
        if (p > run && buf_put(out, run, (size_t)(p - run))) goto oom;
        if (c == '"') {
            if (as_json && buf_byte(out, '"')) goto oom;
            return p + 1;
        }
        if (c < 0x20) return NULL; /* raw control character: not JSON */
        unsigned cp;
        p = escape(p + 1, e, &cp);
        if (!p) return NULL;
        if (as_json ? put_json_char(out, cp) : put_utf8(out, cp)) goto oom;
    }
oom:
    P->oom = 1;
    return NULL;
}

/* ---- numbers and base64 ---------------------------------------------------------------- */

/*
 * A nested number's JSON form, where it is certain without Python: integers of
 * at most 15 characters (Python's int() of them), and plain decimals of at most
 * 15 significant digits, at least 1e-4, without a trailing zero (float64's
 * shortest text is then the text itself, and orjson writes it so). Anything
 * else sets P->fix: the per-line code decides (it may keep the exact text).
 */
static int number_json(Parser *P, const char *s, size_t n, Buf *out) {
    size_t i = 0;
    int negative = n > 0 && s[0] == '-';
    i = (size_t)negative;
    size_t digits = 0;
    while (i + digits < n && s[i + digits] >= '0' && s[i + digits] <= '9') digits++;
    if (n < 16 && digits > 0 && i + digits == n) { /* an integer */
        size_t z = i;
        while (z < n - 1 && s[z] == '0') z++;
        if (s[z] == '0') return buf_byte(out, '0'); /* -0, 000 -> 0 */
        if (negative && buf_byte(out, '-')) return -1;
        return buf_put(out, s + z, n - z);
    }
    /* -?(0|[1-9][0-9]*)\.[0-9]*[1-9] */
    if (digits == 0 || (digits > 1 && s[i] == '0') || i + digits >= n || s[i + digits] != '.') {
        P->fix = 1;
        return buf_put(out, s, n);
    }
    size_t point = i + digits, fraction = 0;
    while (point + 1 + fraction < n && s[point + 1 + fraction] >= '0' && s[point + 1 + fraction] <= '9')
        fraction++;
    if (fraction == 0 || point + 1 + fraction != n || s[n - 1] == '0') {
        P->fix = 1;
        return buf_put(out, s, n);
    }
    size_t significant = digits + fraction;
    if (digits == 1 && s[i] == '0') { /* 0.000ddd: leading zeros are not significant */
        size_t zeros = 0;
        while (s[point + 1 + zeros] == '0') zeros++;
        if (zeros > 3) { /* below 1e-4 Python and orjson write an exponent */
            P->fix = 1;
            return buf_put(out, s, n);
        }
        significant = fraction - zeros;
    }
    if (significant > 15) P->fix = 1;
    return buf_put(out, s, n);
}

static signed char B64[256];

static void init_base64(void) {
    memset(B64, -1, sizeof B64);
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; i++) B64[(unsigned char)alphabet[i]] = (signed char)i;
}

/* Canonical base64 (padding only at the end, length a multiple of 4): bytes into out
 * (or just checked when out is NULL). -1 if not canonical. */
static int base64_decode(const char *s, size_t n, Buf *out) {
    if (n % 4) return -1;
    size_t pad = 0;
    if (n && s[n - 1] == '=') pad = (n > 1 && s[n - 2] == '=') ? 2 : 1;
    if (out && out->len + n / 4 * 3 > out->cap && buf_grow(out, n / 4 * 3)) return -2;
    for (size_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        int a = B64[(unsigned char)s[i]], b = B64[(unsigned char)s[i + 1]];
        int c = (last && pad == 2) ? 0 : B64[(unsigned char)s[i + 2]];
        int d = (last && pad >= 1) ? 0 : B64[(unsigned char)s[i + 3]];
        if ((a | b | c | d) < 0) return -1;
        if (!out) continue;
        uint32_t v = ((uint32_t)a << 18) | ((uint32_t)b << 12) | ((uint32_t)c << 6) | (uint32_t)d;
        char *w = out->p + out->len;
        w[0] = (char)(v >> 16);
        w[1] = (char)(v >> 8);
        w[2] = (char)v;
        out->len += last ? 3 - pad : 3;
    }
    return 0;
}

/* ---- nested values (M, L) -> JSON text -------------------------------------------------- */

static int tag_of(const char *s, size_t n) {
    for (int t = 0; t < N_TAGS; t++)
        if (strlen(TAG_NAMES[t]) == n && memcmp(TAG_NAMES[t], s, n) == 0) return t;
    return -1;
}

/* The type descriptor key at p (`"S"`, `"M"`, ...) and the colon after it. */
static const char *tag_at(Parser *P, const char *p, const char *e, int *tag) {
    P->text.len = 0;
    p = string_at(P, ws(p, e), e, &P->text, 0);
    if (!p) return NULL;
    *tag = tag_of(P->text.p, P->text.len);
    if (*tag < 0) return NULL;
    return expect(p, e, ':');
}

static const char *literal(const char *p, const char *e, int *value) {
    if (e - p >= 4 && memcmp(p, "true", 4) == 0) { *value = 1; return p + 4; }
    if (e - p >= 5 && memcmp(p, "false", 5) == 0) { *value = 0; return p + 5; }
    return NULL;
}

static const char *typed_json(Parser *P, const char *p, const char *e, Buf *out, int depth);

/* The opening bracket at *pp (written to out unless out is NULL): 1 if elements
 * follow, 0 if the bracket closes at once (written too), -1 if *pp holds no such
 * bracket. *pp moves past what was read. */
static int open_bracket(const char **pp, const char *e, Buf *out, char open, char close) {
    const char *p = *pp;
    if (p >= e || *p != open || (out && buf_byte(out, open))) return -1;
    p = ws(p + 1, e);
    *pp = p;
    if (p < e && *p == close) {
        *pp = p + 1;
        return (out && buf_byte(out, close)) ? -1 : 0;
    }
    return 1;
}

/* After an element or member: a comma (1: another follows) or the closing
 * bracket (0: done), written to out unless out is NULL; -1 for anything else. */
static int next_or_close(const char **pp, const char *e, Buf *out, char close) {
    const char *p = ws(*pp, e);
    if (p >= e || (*p != ',' && *p != close) || (out && buf_byte(out, *p))) return -1;
    *pp = *p == ',' ? ws(p + 1, e) : p + 1;
    return *p == ',';
}

/* A JSON string holding a DynamoDB number (N, or an NS element) -> its JSON form. */
static const char *number_at(Parser *P, const char *p, const char *e, Buf *out) {
    P->text.len = 0;
    p = string_at(P, p, e, &P->text, 0);
    if (!p) return NULL;
    if (number_json(P, P->text.p, P->text.len, out)) { P->oom = 1; return NULL; }
    return p;
}

static const char *base64_json_at(Parser *P, const char *p, const char *e, Buf *out) {
    size_t start = out->len;
    p = string_at(P, p, e, out, 1);
    if (!p) return NULL;
    /* written as "..." : base64 needs no escaping, so the text sits between the quotes */
    if (base64_decode(out->p + start + 1, out->len - start - 2, NULL)) P->fix = 1;
    return p;
}

/* A map key as written in the output: offset and length. */
typedef struct {
    size_t at, len;
} KeyRef;

typedef struct {
    const char *text;
    size_t len;
} KeyText;

static int key_text_order(const void *a, const void *b) {
    const KeyText *x = a, *y = b;
    int c = memcmp(x->text, y->text, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Whether two keys of a map are equal (written the same: canonical escaping makes
 * equal keys equal texts); -1 without the memory to sort them. */
static int has_duplicate_key(const Buf *out, const KeyRef *keys, size_t n) {
    if (n <= INLINE_KEYS) {
        for (size_t i = 1; i < n; i++)
            for (size_t k = 0; k < i; k++)
                if (keys[k].len == keys[i].len &&
                    memcmp(out->p + keys[k].at, out->p + keys[i].at, keys[i].len) == 0)
                    return 1;
        return 0;
    }
    KeyText *texts = malloc(n * sizeof *texts);
    if (!texts) return -1;
    for (size_t i = 0; i < n; i++) texts[i] = (KeyText){out->p + keys[i].at, keys[i].len};
    qsort(texts, n, sizeof *texts, key_text_order);
    int duplicate = 0;
    for (size_t i = 1; i < n && !duplicate; i++) duplicate = key_text_order(&texts[i - 1], &texts[i]) == 0;
    free(texts);
    return duplicate;
}

/* An M value `{"key": {"TAG": value}, ...}` at p -> a JSON object. A duplicated key
 * sets P->fix: Python's dict keeps its first position and its last value. */
static const char *map_json(Parser *P, const char *p, const char *e, Buf *out, int depth) {
    KeyRef inline_keys[INLINE_KEYS], *keys = inline_keys;
    size_t n = 0, cap = INLINE_KEYS;
    const char *result = NULL;
    int more = open_bracket(&p, e, out, '{', '}');
    while (more > 0) {
        size_t start = out->len;
        if (!(p = string_at(P, p, e, out, 1))) goto done;
        if (n == cap) {
            KeyRef *grown = malloc(2 * cap * sizeof *keys);
            if (!grown) { P->oom = 1; goto done; }
            memcpy(grown, keys, n * sizeof *keys);
            if (keys != inline_keys) free(keys);
            keys = grown;
            cap *= 2;
        }
        keys[n++] = (KeyRef){start, out->len - start};
        if (!(p = expect(p, e, ':')) || buf_byte(out, ':')) goto done;
        if (!(p = typed_json(P, p, e, out, depth + 1))) goto done;
        more = next_or_close(&p, e, out, '}');
    }
    if (more == 0) {
        if (has_duplicate_key(out, keys, n)) P->fix = 1; /* or no memory to check: Python does */
        result = p;
    }
done:
    if (keys != inline_keys) free(keys);
    return result;
}

/* The value of DynamoDB type `tag` at p -> its plain JSON text. */
static const char *value_json(Parser *P, int tag, const char *p, const char *e, Buf *out, int depth) {
    int flag;
    switch (tag) {
    case T_S: return string_at(P, p, e, out, 1);
    case T_N: return number_at(P, p, e, out);
    case T_B: return base64_json_at(P, p, e, out);
    case T_BOOL:
        p = literal(p, e, &flag);
        if (!p || buf_put(out, flag ? "true" : "false", flag ? 4 : 5)) return NULL;
        return p;
    case T_NULL:
        p = literal(p, e, &flag); /* the per-line path writes null for true and false */
        if (!p || buf_put(out, "null", 4)) return NULL;
        return p;
    case T_SS: case T_NS: case T_BS: case T_L: {
        int more = open_bracket(&p, e, out, '[', ']');
        while (more > 0) {
            if (tag == T_SS) p = string_at(P, p, e, out, 1);
            else if (tag == T_NS) p = number_at(P, p, e, out);
            else if (tag == T_BS) p = base64_json_at(P, p, e, out);
            else p = typed_json(P, p, e, out, depth + 1);
            if (!p) return NULL;
            more = next_or_close(&p, e, out, ']');
        }
        return more == 0 ? p : NULL;
    }
    case T_M: return map_json(P, p, e, out, depth);
    default: return NULL;
    }
}

/* A typed value `{"TAG": value}` at p -> the plain JSON text of its value. */
static const char *typed_json(Parser *P, const char *p, const char *e, Buf *out, int depth) {
    if (depth > MAX_DEPTH) return NULL;
    int tag;
    p = expect(p, e, '{');
    if (!p || !(p = tag_at(P, p, e, &tag))) return NULL;
    p = value_json(P, tag, p, e, out, depth);
    if (!p) return NULL;
    p = ws(p, e);
    return (p < e && *p == '}') ? p + 1 : NULL; /* exactly one type descriptor */
}

/* ---- top-level attributes ----------------------------------------------------------------- */

/* The JSON string at p, base64-decoded into out; NULL unless canonical base64. */
static const char *base64_at(Parser *P, const char *p, const char *e, Buf *out) {
    P->text.len = 0;
    p = string_at(P, p, e, &P->text, 0);
    if (!p) return NULL;
    int rc = base64_decode(P->text.p, P->text.len, out);
    if (rc == -2) P->oom = 1;
    return rc ? NULL : p;
}

static const char *set_at(Parser *P, Column *c, int tag, const char *p, const char *e) {
    int more = open_bracket(&p, e, NULL, '[', ']');
    while (more > 0) {
        p = tag == T_BS ? base64_at(P, p, e, &c->data) : string_at(P, p, e, &c->data, 0);
        if (!p) return NULL;
        c->elements++;
        if (buf_i32(&c->voffsets, (int32_t)c->data.len)) { P->oom = 1; return NULL; }
        more = next_or_close(&p, e, NULL, ']');
    }
    return more == 0 ? p : NULL;
}

/* The typed value of one attribute, at p (its `{`), into its (attribute, tag) column. */
static const char *attribute_value(Parser *P, int attr, const char *p, const char *e) {
    int tag, flag;
    p = expect(p, e, '{');
    if (!p || !(p = tag_at(P, p, e, &tag))) return NULL;
    Column *c = column_for(P, attr, tag);
    if (!c) { P->oom = 1; return NULL; }
    Py_ssize_t row = P->row;
    const char *start = p;
    switch (tag) {
    case T_S: case T_N:
        pad_offsets(c, row);
        p = string_at(P, p, e, &c->data, 0);
        if (!p) return NULL;
        end_row(c, row, (int32_t)c->data.len);
        break;
    case T_B:
        pad_offsets(c, row);
        p = base64_at(P, p, e, &c->data);
        if (!p) return NULL;
        end_row(c, row, (int32_t)c->data.len);
        break;
    case T_BOOL: case T_NULL:
        p = literal(p, e, &flag);
        if (!p || (tag == T_NULL && !flag)) return NULL; /* {"NULL": false}: let Python decide */
        if (flag && tag == T_BOOL) c->bits[row >> 3] |= (uint8_t)(1u << (row & 7));
        c->valid[row >> 3] |= (uint8_t)(1u << (row & 7));
        c->present++;
        break;
    case T_SS: case T_NS: case T_BS:
        pad_offsets(c, row);
        p = set_at(P, c, tag, p, e);
        if (!p) return NULL;
        end_row(c, row, c->elements);
        break;
    case T_M: case T_L: {
        pad_offsets(c, row);
        size_t before = c->data.len;
        P->fix = 0;
        p = value_json(P, tag, p, e, &c->data, 1);
        if (!p) return NULL;
        if (P->fix) { /* the caller converts this value with the per-line code */
            c->data.len = before;
            int64_t triple[3] = {row, start - P->base, p - P->base};
            if (buf_put(&c->fixups, triple, sizeof triple)) { P->oom = 1; return NULL; }
        }
        end_row(c, row, (int32_t)c->data.len);
        break;
    }
    default: return NULL;
    }
    p = ws(p, e);
    return (p < e && *p == '}') ? p + 1 : NULL; /* exactly one type descriptor */
}

/* An item `{"attr": {"TAG": value}, ...}` at p (its `{`) into the columns of this row. */
static const char *item_at(Parser *P, const char *p, const char *e) {
    int more = open_bracket(&p, e, NULL, '{', '}');
    while (more > 0) {
        P->key.len = 0;
        p = string_at(P, p, e, &P->key, 0);
        if (!p) return NULL;
        int attr = attribute_for(P, P->key.p ? P->key.p : "", P->key.len);
        if (attr < 0) { P->oom = 1; return NULL; }
        if (P->attrs[attr].last_row == P->row) return NULL; /* duplicated attribute */
        P->attrs[attr].last_row = P->row;
        p = expect(p, e, ':');
        if (!p || !(p = attribute_value(P, attr, p, e))) return NULL;
        more = next_or_close(&p, e, NULL, '}');
    }
    return more == 0 ? p : NULL;
}

/* The end of a line: nothing but a newline (or the end of the batch) after p. */
static const char *line_end(const char *p, const char *e) {
    p = ws(p, e);
    if (p == e) return p;
    return *p == '\n' ? p + 1 : NULL;
}

/* One line `{"Item": {...}}`; returns the position after its newline (or the end). */
static const char *line_at(Parser *P, const char *p, const char *e) {
    p = expect(p, e, '{');
    if (!p) return NULL;
    P->key.len = 0;
    p = string_at(P, p, e, &P->key, 0);
    if (!p || P->key.len != 4 || memcmp(P->key.p, "Item", 4) != 0) return NULL;
    p = expect(p, e, ':');
    if (!p || !(p = item_at(P, p, e))) return NULL;
    p = ws(p, e);
    if (p >= e || *p != '}') return NULL; /* the line holds nothing but "Item" */
    return line_end(p + 1, e);
}

/* ---- change lines (incremental exports) --------------------------------------------------- */

/* Any JSON value at p, checked and skipped (values the conversion does not use). */
static const char *skip_json(Parser *P, const char *p, const char *e, int depth) {
    int flag, more;
    if (depth > MAX_DEPTH || (p = ws(p, e)) >= e) return NULL;
    switch (*p) {
    case '"':
        P->text.len = 0;
        return string_at(P, p, e, &P->text, 0);
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        more = open_bracket(&p, e, NULL, *p, close);
        while (more > 0) {
            if (close == '}') {
                P->text.len = 0;
                if (!(p = string_at(P, p, e, &P->text, 0)) || !(p = expect(p, e, ':'))) return NULL;
            }
            if (!(p = skip_json(P, p, e, depth + 1))) return NULL;
            more = next_or_close(&p, e, NULL, close);
        }
        return more == 0 ? p : NULL;
    }
    case 't': case 'f': return literal(p, e, &flag);
    case 'n': return (e - p >= 4 && memcmp(p, "null", 4) == 0) ? p + 4 : NULL;
    default: { /* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
        const char *q = p;
        if (q < e && *q == '-') q++;
        if (q < e && *q == '0') q++;
        else if (q < e && *q >= '1' && *q <= '9') while (q < e && *q >= '0' && *q <= '9') q++;
        else return NULL;
        if (q < e && *q == '.') {
            const char *digits = ++q;
            while (q < e && *q >= '0' && *q <= '9') q++;
            if (q == digits) return NULL;
        }
        if (q < e && (*q == 'e' || *q == 'E')) {
            q++;
            if (q < e && (*q == '+' || *q == '-')) q++;
            const char *digits = q;
            while (q < e && *q >= '0' && *q <= '9') q++;
            if (q == digits) return NULL;
        }
        return q;
    }
    }
}

static int key_equals(Buf *key, const char *s, size_t n) {
    return key->len == n && (n == 0 || memcmp(key->p, s, n) == 0);
}

/* `{"WriteTimestampMicros": {"N": "..."}, ...}`: the N text into the stamps column. */
static const char *metadata_at(Parser *P, const char *p, const char *e) {
    int seen = 0, more = open_bracket(&p, e, NULL, '{', '}');
    while (more > 0) {
        P->key.len = 0;
        if (!(p = string_at(P, p, e, &P->key, 0)) || !(p = expect(p, e, ':'))) return NULL;
        if (key_equals(&P->key, "WriteTimestampMicros", 20)) {
            int inner = open_bracket(&p, e, NULL, '{', '}');
            if (seen++ || inner <= 0) return NULL;
            while (inner > 0) {
                P->key.len = 0;
                if (!(p = string_at(P, p, e, &P->key, 0)) || !(p = expect(p, e, ':'))) return NULL;
                if (key_equals(&P->key, "N", 1)) {
                    if (P->stamps.filled > P->row) return NULL; /* "N" twice */
                    pad_offsets(&P->stamps, P->row);
                    if (!(p = string_at(P, p, e, &P->stamps.data, 0))) return NULL;
                    end_row(&P->stamps, P->row, (int32_t)P->stamps.data.len);
                } else if (!(p = skip_json(P, p, e, 1))) {
                    return NULL;
                }
                inner = next_or_close(&p, e, NULL, '}');
            }
            if (inner < 0) return NULL;
        } else if (!(p = skip_json(P, p, e, 1))) {
            return NULL;
        }
        more = next_or_close(&p, e, NULL, '}');
    }
    return more == 0 && seen ? p : NULL;
}

/*
 * Keys `{"attr": {"TAG": value}, ...}` at p. merge = 0: checked (values as
 * typed JSON), and whether every key attribute is there; merge = 1: each
 * attribute the row does not hold yet goes into the columns, as the per-line
 * path's `{**Keys, **NewImage}` does.
 */
static const char *keys_at(Parser *P, const char *p, const char *e, int merge, int *found) {
    size_t name_at[MAX_KEY_MEMBERS], name_len[MAX_KEY_MEMBERS];
    int names = 0, more = open_bracket(&p, e, NULL, '{', '}');
    *found = 0;
    P->names.len = 0;
    while (more > 0) {
        P->key.len = 0;
        if (!(p = string_at(P, p, e, &P->key, 0)) || !(p = expect(p, e, ':'))) return NULL;
        for (int k = 0; k < P->nkeys; k++)
            if (key_equals(&P->key, P->key_names[k], (size_t)P->key_lens[k])) (*found)++;
        if (names == MAX_KEY_MEMBERS) return NULL; /* a table key has one or two attributes */
        for (int k = 0; k < names; k++) /* a name twice: Python keeps the last value */
            if (key_equals(&P->key, P->names.p + name_at[k], name_len[k])) return NULL;
        name_at[names] = P->names.len;
        name_len[names++] = P->key.len;
        if (P->key.len && buf_put(&P->names, P->key.p, P->key.len)) { P->oom = 1; return NULL; }
        if (merge) {
            int attr = attribute_for(P, P->key.p ? P->key.p : "", P->key.len);
            if (attr < 0) { P->oom = 1; return NULL; }
            if (P->attrs[attr].last_row == P->row) { /* NewImage has it: skip this value */
                P->scratch.len = 0;
                if (!(p = typed_json(P, p, e, &P->scratch, 1))) return NULL;
            } else {
                P->attrs[attr].last_row = P->row;
                if (!(p = attribute_value(P, attr, p, e))) return NULL;
            }
        } else {
            P->scratch.len = 0;
            if (!(p = typed_json(P, p, e, &P->scratch, 1))) return NULL;
        }
        more = next_or_close(&p, e, NULL, '}');
    }
    return more == 0 ? p : NULL;
}

/* Whether the row's image lacks one of the key attributes. */
static int image_lacks_a_key(Parser *P) {
    for (int k = 0; k < P->nkeys; k++) {
        int attr = attribute_for(P, P->key_names[k], (size_t)P->key_lens[k]);
        if (attr < 0) { P->oom = 1; return 1; }
        if (P->attrs[attr].last_row != P->row) return 1;
    }
    return 0;
}

/*
 * One change line `{"Metadata": ..., "Keys": ..., "NewImage": ..., "OldImage": ...}`
 * (members in any order; OldImage and unknown members are checked as JSON and
 * not used). The row holds NewImage, plus Keys where NewImage lacks a key
 * attribute, or Keys alone for a delete.
 */
static const char *change_at(Parser *P, const char *p, const char *e) {
    const char *keys = NULL;
    int seen_metadata = 0, seen_image = 0, found = 0;
    p = ws(p, e);
    int more = open_bracket(&p, e, NULL, '{', '}');
    while (more > 0) {
        P->key.len = 0;
        if (!(p = string_at(P, p, e, &P->key, 0)) || !(p = expect(p, e, ':'))) return NULL;
        if (key_equals(&P->key, "Metadata", 8)) {
            if (seen_metadata++ || !(p = metadata_at(P, p, e))) return NULL;
        } else if (key_equals(&P->key, "Keys", 4)) {
            if (keys || !(p = keys_at(P, keys = p, e, 0, &found))) return NULL;
        } else if (key_equals(&P->key, "NewImage", 8)) {
            if (seen_image++ || !(p = item_at(P, p, e))) return NULL;
        } else if (!(p = skip_json(P, p, e, 0))) {
            return NULL;
        }
        more = next_or_close(&p, e, NULL, '}');
    }
    if (more < 0 || !seen_metadata || !keys || found != P->nkeys) return NULL;
    if (P->stamps.filled != P->row + 1) return NULL; /* WriteTimestampMicros without N */
    if (!seen_image) P->deleted[P->row >> 3] |= (uint8_t)(1u << (P->row & 7));
    if ((!seen_image || image_lacks_a_key(P)) && !keys_at(P, keys, e, 1, &found)) return NULL;
    return line_end(p, e);
}

/* ---- results as Python objects ------------------------------------------------------------ */

static PyObject *bytes_or_none(const void *p, size_t n, int present) {
    if (!present) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(p ? (const char *)p : "", (Py_ssize_t)n);
}

static int by_attribute(const void *a, const void *b) {
    const Column *x = a, *y = b;
    if (x->attr != y->attr) return x->attr < y->attr ? -1 : 1;
    return x->order < y->order ? -1 : (x->order > y->order);
}

static PyObject *column_tuple(Parser *P, Column *c) {
    Py_ssize_t rows = P->rows, nulls = rows - c->present;
    size_t bitmap = (size_t)(rows + 7) / 8;
    int has_offsets = c->offsets != NULL;
    if (has_offsets) pad_offsets(c, rows);
    PyObject *fixups = NULL;
    if (c->fixups.len) {
        size_t n = c->fixups.len / (3 * sizeof(int64_t));
        fixups = PyList_New((Py_ssize_t)n);
        if (!fixups) return NULL;
        int64_t *t = (int64_t *)c->fixups.p;
        for (size_t i = 0; i < n; i++) {
            PyObject *item = Py_BuildValue("(LLL)", (long long)t[3 * i], (long long)t[3 * i + 1],
                                           (long long)t[3 * i + 2]);
            if (!item) { Py_DECREF(fixups); return NULL; }
            PyList_SET_ITEM(fixups, (Py_ssize_t)i, item);
        }
    } else {
        fixups = Py_NewRef(Py_None);
    }
    Attribute *a = &P->attrs[c->attr];
    int is_set = c->tag == T_SS || c->tag == T_NS || c->tag == T_BS;
    PyObject *result = Py_BuildValue(
        "(s#snNNNNNiN)", a->name, (Py_ssize_t)a->len, TAG_NAMES[c->tag], nulls,
        bytes_or_none(c->valid, bitmap, nulls > 0),
        bytes_or_none(c->offsets, ((size_t)rows + 1) * sizeof(int32_t), has_offsets),
        bytes_or_none(c->data.p, c->data.len, has_offsets),
        bytes_or_none(c->bits, bitmap, c->bits != NULL),
        bytes_or_none(c->voffsets.p, c->voffsets.len, is_set), (int)c->elements, fixups);
    return result;
}

static void parser_free(Parser *P) {
    for (int i = 0; i < P->nattrs; i++) free(P->attrs[i].name);
    for (int i = 0; i < P->ncols; i++) column_free(&P->cols[i]);
    free(P->attrs);
    free(P->table);
    free(P->cols);
    free(P->key.p);
    free(P->text.p);
    free(P->scratch.p);
    free(P->names.p);
    free(P->key_names);
    free(P->key_lens);
    free(P->deleted);
    column_free(&P->stamps);
}

/* Change mode: the table's key attribute names (a tuple of str) into the parser. */
static int set_keys(Parser *P, PyObject *keys) {
    if (!PyTuple_Check(keys)) {
        PyErr_SetString(PyExc_TypeError, "keys must be a tuple of str");
        return -1;
    }
    P->nkeys = (int)PyTuple_GET_SIZE(keys);
    P->key_names = calloc((size_t)P->nkeys + 1, sizeof(char *));
    P->key_lens = calloc((size_t)P->nkeys + 1, sizeof(Py_ssize_t));
    P->deleted = calloc((size_t)(P->rows + 7) / 8 + 1, 1);
    if (!P->key_names || !P->key_lens || !P->deleted || column_init(&P->stamps, T_N, P->rows)) {
        PyErr_NoMemory();
        return -1;
    }
    for (int k = 0; k < P->nkeys; k++) { /* UTF-8 kept alive by the tuple's str objects */
        P->key_names[k] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(keys, k), &P->key_lens[k]);
        if (!P->key_names[k]) return -1;
    }
    return 0;
}

static PyObject *results(Parser *P, int changes) {
    PyObject *columns = PyList_New(P->ncols);
    if (!columns) return NULL;
    for (int i = 0; i < P->ncols; i++) {
        PyObject *column = column_tuple(P, &P->cols[i]);
        if (!column) { Py_DECREF(columns); return NULL; }
        PyList_SET_ITEM(columns, i, column);
    }
    if (!changes) return columns;
    pad_offsets(&P->stamps, P->rows);
    return Py_BuildValue(
        "(Ny#y#y#)", columns, (const char *)P->deleted, (Py_ssize_t)((P->rows + 7) / 8),
        (const char *)P->stamps.offsets, (Py_ssize_t)(((size_t)P->rows + 1) * sizeof(int32_t)),
        P->stamps.data.p ? P->stamps.data.p : "", (Py_ssize_t)P->stamps.data.len);
}

static PyObject *parse(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t rows;
    PyObject *keys = Py_None;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*n|O", &view, &rows, &keys)) return NULL;
    if (view.len > MAX_BLOB || rows < 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    Parser P;
    memset(&P, 0, sizeof P);
    P.base = view.buf;
    P.rows = rows;
    int changes = keys != Py_None;
    if (changes && set_keys(&P, keys)) {
        parser_free(&P);
        PyBuffer_Release(&view);
        return NULL;
    }
    const char *p = view.buf, *e = p + view.len;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (P.row = 0; P.row < rows; P.row++) {
        if (p >= e || !(p = changes ? change_at(&P, p, e) : line_at(&P, p, e))) { ok = 0; break; }
    }
    if (ok && p != e) ok = 0; /* more lines than rows */
    if (ok && P.ncols > 1) /* qsort's pointer must be valid even for 0 items: cols may be NULL */
        qsort(P.cols, (size_t)P.ncols, sizeof(Column), by_attribute);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (P.oom) {
        PyErr_NoMemory();
    } else if (!ok) {
        result = Py_NewRef(Py_None);
    } else {
        result = results(&P, changes);
    }
    parser_free(&P);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_VARARGS,
     "parse(blob, rows[, keys]) -> raw column buffers of `rows` full-export lines, or None.\n"
     "With keys (the table's key attribute names), the lines are incremental-export\n"
     "change lines: -> (columns, deleted bits, stamp offsets, stamp texts), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_items", "Native parser for DynamoDB full-export JSON lines.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__items(void) {
    init_base64();
    return PyModule_Create(&module);
}
