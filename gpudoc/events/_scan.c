/* gpudoc's compiled reader of scalar event records, for ``events info`` and ``events export``.
 *
 * A Decoder walks a buffer of TFRecord-framed records, checks both masked CRC-32Cs of each, and
 * decodes the canonical scalar event in place: Event{wall_time, step, summary{value{tag,
 * simple_value | tensor (a float or double scalar of a tag whose plugin is "scalars"), metadata}}}.
 * It keeps a table of the tags it has met (their plugin, as TagPlugins learns it, is told by the
 * caller), and either tallies each value as ``events info`` does (count, step range, repeated
 * steps, steps going back) or packs it into columns for ``events export``.
 *
 * Every byte is untrusted: each read is checked against the buffer's end before it is made, and a
 * record is decoded here only when all of it is understood (every field known, at most once,
 * strings valid UTF-8, as the protobuf parser would accept them). At the first record that is
 * not such a scalar event, or is damaged, cut off or past the buffer, the scan stops and the
 * Python caller reads that record its general way (gpudoc/events/records.py, info.py, export.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_crc32c.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define SCAN_DECODES 0 /* values are read as little-endian memory: leave them all to Python */
#else
#define SCAN_DECODES 1
#endif

#define RECORD_MAX ((uint64_t)1 << 31)

/* ---- CRC-32C (Castagnoli, _crc32c.h), masked as TFRecord stores it ---- */

static uint32_t record_crc(const uint8_t *p, size_t n) {
    uint32_t c = crc32c(0, p, n);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- protobuf wire reading, bounds-checked ---- */

typedef struct {
    const uint8_t *at, *end;
} Wire;

/* A varint of at most 10 bytes whose 10th byte is 0 or 1 (a wider one is left to protobuf). */
static int wire_varint(Wire *w, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (w->at >= w->end) return 0;
        uint8_t b = *w->at++;
        if (i == 9 && b > 1) return 0;
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (b < 0x80) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

static int wire_bytes(Wire *w, const uint8_t **p, size_t *n) {
    uint64_t len;
    if (!wire_varint(w, &len) || len > (uint64_t)(w->end - w->at)) return 0;
    *p = w->at;
    *n = (size_t)len;
    w->at += len;
    return 1;
}

static int wire_fixed(Wire *w, size_t n, const uint8_t **p) {
    if ((size_t)(w->end - w->at) < n) return 0;
    *p = w->at;
    w->at += n;
    return 1;
}

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), as protobuf checks
 * string fields. */
static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= more) return 0;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (more == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += more + 1;
    }
    return 1;
}

/* ---- tags and their tallies ---- */

typedef struct {
    PyObject *name; /* str */
    const char *utf8;
    Py_ssize_t size;
    uint64_t hash;
    int known;   /* the tag's plugin is known (its first metadata was read) */
    int scalars; /* ... and it is "scalars": its tensor values are scalars */
    uint64_t mark;
    /* events info's tally */
    long long count, duplicates, lo, hi, last;
    int has_last;
    int64_t *seen; /* open addressing; INT64_MIN marks an empty slot */
    size_t seen_cap, seen_n;
    int seen_min; /* INT64_MIN itself was seen */
} Tag;

typedef struct {
    int64_t step;
    double wall;
    double value;
    int32_t tag;
    int32_t record;
} Row; /* one value as export takes it; the columns are these, packed */

typedef struct {
    int32_t tag;
    double value;
} Pending;

typedef struct {
    PyObject_HEAD
    int tally;
    Tag *tags;
    Py_ssize_t n_tags, cap_tags;
    Py_ssize_t *slots; /* tag index + 1 per slot, 0 empty */
    size_t n_slots;
    uint64_t marks;
    Pending *pending;
    size_t cap_pending;
    /* run-level range of events info */
    int has_steps, has_walls;
    long long step_lo, step_hi;
    double wall_lo, wall_hi;
} Decoder;

static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t name_hash(const uint8_t *s, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001B3ull;
    return mix(h);
}

static int slots_grow(Decoder *d) {
    size_t cap = d->n_slots ? d->n_slots * 2 : 64;
    Py_ssize_t *slots = PyMem_Calloc(cap, sizeof *slots);
    if (!slots) return 0;
    for (Py_ssize_t i = 0; i < d->n_tags; i++) {
        size_t at = d->tags[i].hash & (cap - 1);
        while (slots[at]) at = (at + 1) & (cap - 1);
        slots[at] = i + 1;
    }
    PyMem_Free(d->slots);
    d->slots = slots;
    d->n_slots = cap;
    return 1;
}

/* The index of the tag named by the n UTF-8 bytes at s, added when new; -1 when the bytes are
 * not valid UTF-8 (no error set), -2 with an error set (out of memory). */
static Py_ssize_t tag_index(Decoder *d, const uint8_t *s, size_t n) {
    uint64_t h = name_hash(s, n);
    if (d->n_slots) {
        size_t at = h & (d->n_slots - 1);
        while (d->slots[at]) {
            Tag *t = &d->tags[d->slots[at] - 1];
            if (t->hash == h && (size_t)t->size == n && memcmp(t->utf8, s, n) == 0) return d->slots[at] - 1;
            at = (at + 1) & (d->n_slots - 1);
        }
    }
    if (!utf8_valid(s, n)) return -1;
    if ((size_t)(d->n_tags + 1) * 2 > d->n_slots && !slots_grow(d)) goto nomem;
    if (d->n_tags == d->cap_tags) {
        Py_ssize_t cap = d->cap_tags ? d->cap_tags * 2 : 16;
        Tag *tags = PyMem_Realloc(d->tags, (size_t)cap * sizeof *tags);
        if (!tags) goto nomem;
        d->tags = tags;
        d->cap_tags = cap;
    }
    PyObject *name = PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, "strict");
    if (!name) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -2;
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &size);
    if (!utf8) {
        Py_DECREF(name);
        return -2;
    }
    Tag *t = &d->tags[d->n_tags];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->utf8 = utf8;
    t->size = size;
    t->hash = h;
    size_t at = h & (d->n_slots - 1);
    while (d->slots[at]) at = (at + 1) & (d->n_slots - 1);
    d->slots[at] = d->n_tags + 1;
    return d->n_tags++;
nomem:
    PyErr_NoMemory();
    return -2;
}

static size_t seen_slot(const Tag *t, int64_t step) {
    size_t at = mix((uint64_t)step) & (t->seen_cap - 1);
    while (t->seen[at] != INT64_MIN && t->seen[at] != step) at = (at + 1) & (t->seen_cap - 1);
    return at;
}

/* Whether ``step`` was seen for the tag; 0/1, or -1 out of memory. Adds it when ``add``. */
static int seen_has(Tag *t, int64_t step, int add) {
    if (step == INT64_MIN) {
        int had = t->seen_min;
        if (add) t->seen_min = 1;
        return had;
    }
    if (t->seen_cap) {
        size_t at = seen_slot(t, step);
        if (t->seen[at] == step) return 1;
        if (!add) return 0;
    } else if (!add) {
        return 0;
    }
    if ((t->seen_n + 1) * 2 > t->seen_cap) {
        size_t cap = t->seen_cap ? t->seen_cap * 2 : 16;
        int64_t *seen = PyMem_Malloc(cap * sizeof *seen);
        if (!seen) return -1;
        for (size_t i = 0; i < cap; i++) seen[i] = INT64_MIN;
        int64_t *old = t->seen;
        size_t old_cap = t->seen_cap;
        t->seen = seen;
        t->seen_cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i] != INT64_MIN) t->seen[seen_slot(t, old[i])] = old[i];
        PyMem_Free(old);
    }
    t->seen[seen_slot(t, step)] = step;
    t->seen_n++;
    return 0;
}

static long long seen_at_or_after(const Tag *t, int64_t step) {
    long long n = (t->seen_min && step == INT64_MIN) ? 1 : 0;
    for (size_t i = 0; i < t->seen_cap; i++)
        if (t->seen[i] != INT64_MIN && t->seen[i] >= step) n++;
    return n;
}

/* One value as events info counts it: -1 normally, the earlier points at or after ``step`` when
 * the tag's steps went back, -2 out of memory. */
static long long tally_value(Tag *t, int64_t step) {
    t->count++;
    if (t->count == 1 || step < t->lo) t->lo = step;
    if (t->count == 1 || step > t->hi) t->hi = step;
    int had = seen_has(t, step, 0);
    if (had) t->duplicates++;
    long long earlier = -1;
    if (t->has_last && step < t->last) earlier = seen_at_or_after(t, step);
    if (!had && seen_has(t, step, 1) < 0) return -2;
    t->last = step;
    t->has_last = 1;
    return earlier;
}

static void tally_step(Decoder *d, long long step) {
    if (!d->has_steps || step < d->step_lo) d->step_lo = step;
    if (!d->has_steps || step > d->step_hi) d->step_hi = step;
    d->has_steps = 1;
}

/* As info.py's ``min``/``max`` fold them (NaN included: a later value replaces only when it
 * compares less, or greater). Zero wall times are not counted. */
static void tally_wall(Decoder *d, double wall) {
    if (wall == 0.0) return;
    if (!d->has_walls) {
        d->wall_lo = d->wall_hi = wall;
        d->has_walls = 1;
        return;
    }
    if (wall < d->wall_lo) d->wall_lo = wall;
    if (wall > d->wall_hi) d->wall_hi = wall;
}

/* ---- decoding one record's Event ---- */

static int metadata_valid(const uint8_t *p, size_t n) {
    Wire w = {p, p + n};
    int seen[5] = {0};
    while (w.at < w.end) {
        uint64_t key, ignored;
        const uint8_t *s;
        size_t len;
        if (!wire_varint(&w, &key)) return 0;
        uint64_t field = key >> 3;
        if (field < 1 || field > 4 || seen[field]++) return 0;
        if (field == 4) {
            if ((key & 7) != 0 || !wire_varint(&w, &ignored)) return 0;
            continue;
        }
        if ((key & 7) != 2 || !wire_bytes(&w, &s, &len)) return 0;
        if (field == 1) { /* PluginData{plugin_name, content} */
            Wire inner = {s, s + len};
            int had[3] = {0};
            while (inner.at < inner.end) {
                const uint8_t *q;
                size_t qn;
                if (!wire_varint(&inner, &key)) return 0;
                field = key >> 3;
                if ((key & 7) != 2 || field < 1 || field > 2 || had[field]++ || !wire_bytes(&inner, &q, &qn)) return 0;
                if (field == 1 && !utf8_valid(q, qn)) return 0;
            }
        } else if (!utf8_valid(s, len)) {
            return 0;
        }
    }
    return 1;
}

/* A float or double scalar tensor: DT_FLOAT/DT_DOUBLE, no shape dims, one value from exactly one
 * of tensor_content, float_val, double_val (as tensor_util.make_ndarray reads it). */
static int tensor_scalar(const uint8_t *p, size_t n, double *out) {
    Wire w = {p, p + n};
    uint64_t dtype = 0;
    int has_dtype = 0, has_shape = 0, sources = 0, source = 0;
    const uint8_t *value = NULL;
    size_t value_n = 0;
    while (w.at < w.end) {
        uint64_t key;
        const uint8_t *s;
        size_t len;
        if (!wire_varint(&w, &key)) return 0;
        switch (key) {
        case 0x08:
            if (has_dtype++ || !wire_varint(&w, &dtype)) return 0;
            break;
        case 0x12:
            if (has_shape++ || !wire_bytes(&w, &s, &len) || len) return 0;
            break;
        case 0x22: /* tensor_content */
        case 0x2A: /* float_val, packed */
        case 0x32: /* double_val, packed */
            if (sources++ || !wire_bytes(&w, &value, &value_n)) return 0;
            source = (int)(key >> 3);
            break;
        case 0x2D: /* float_val, one */
            if (sources++ || !wire_fixed(&w, 4, &value)) return 0;
            value_n = 4;
            source = 5;
            break;
        case 0x31: /* double_val, one */
            if (sources++ || !wire_fixed(&w, 8, &value)) return 0;
            value_n = 8;
            source = 6;
            break;
        default:
            return 0;
        }
    }
    if (!has_dtype || sources != 1) return 0;
    if (dtype == 1 && value_n == 4 && (source == 4 || source == 5)) {
        float f;
        memcpy(&f, value, 4);
        *out = (double)f;
        return 1;
    }
    if (dtype == 2 && value_n == 8 && (source == 4 || source == 6)) {
        memcpy(out, value, 8);
        return 1;
    }
    return 0;
}

/* The record's step, wall time and values (into d->pending) when it is a scalar event this
 * decoder reads: 1; 0 when it is not (Python reads it); -1 with an error set. */
static int decode_event(Decoder *d, const uint8_t *p, size_t n, int64_t *step, double *wall, size_t *count) {
    Wire w = {p, p + n};
    int has_wall = 0, has_step = 0, has_summary = 0;
    const uint8_t *summary = NULL;
    size_t summary_n = 0;
    *step = 0;
    *wall = 0.0;
    while (w.at < w.end) {
        uint64_t key, v;
        const uint8_t *s;
        if (!wire_varint(&w, &key)) return 0;
        if (key == 0x09) {
            if (has_wall++ || !wire_fixed(&w, 8, &s)) return 0;
            memcpy(wall, s, 8);
        } else if (key == 0x10) {
            if (has_step++ || !wire_varint(&w, &v)) return 0;
            *step = (int64_t)v;
        } else if (key == 0x2A) {
            if (has_summary++ || !wire_bytes(&w, &summary, &summary_n)) return 0;
        } else {
            return 0;
        }
    }
    if (!has_summary) return 0;
    Wire sw = {summary, summary + summary_n};
    size_t k = 0;
    while (sw.at < sw.end) {
        uint64_t key;
        const uint8_t *value;
        size_t value_n;
        if (!wire_varint(&sw, &key) || key != 0x0A || !wire_bytes(&sw, &value, &value_n)) return 0;
        Wire vw = {value, value + value_n};
        const uint8_t *tag = (const uint8_t *)"", *tensor = NULL, *meta = NULL;
        size_t tag_n = 0, tensor_n = 0, meta_n = 0;
        int has_tag = 0, has_simple = 0, has_meta = 0;
        double number = 0.0;
        while (vw.at < vw.end) {
            const uint8_t *s;
            if (!wire_varint(&vw, &key)) return 0;
            if (key == 0x0A) {
                if (has_tag++ || !wire_bytes(&vw, &tag, &tag_n)) return 0;
            } else if (key == 0x15) {
                if (has_simple++ || tensor || !wire_fixed(&vw, 4, &s)) return 0;
                float f;
                memcpy(&f, s, 4);
                number = (double)f;
            } else if (key == 0x42) {
                if (has_simple || tensor || !wire_bytes(&vw, &tensor, &tensor_n)) return 0;
            } else if (key == 0x4A) {
                if (has_meta++ || !wire_bytes(&vw, &meta, &meta_n)) return 0;
            } else {
                return 0;
            }
        }
        if (!has_simple && !tensor) return 0;
        Py_ssize_t index = tag_index(d, tag, tag_n);
        if (index == -2) return -1;
        if (index < 0) return 0;
        Tag *t = &d->tags[index];
        /* A tag's first metadata names its plugin: Python reads that value and tells us. */
        if (has_meta && (!t->known || !metadata_valid(meta, meta_n))) return 0;
        if (tensor && (!t->scalars || !tensor_scalar(tensor, tensor_n, &number))) return 0;
        if (k == d->cap_pending) {
            size_t cap = d->cap_pending ? d->cap_pending * 2 : 8;
            Pending *grown = PyMem_Realloc(d->pending, cap * sizeof *grown);
            if (!grown) {
                PyErr_NoMemory();
                return -1;
            }
            d->pending = grown;
            d->cap_pending = cap;
        }
        d->pending[k].tag = (int32_t)index;
        d->pending[k].value = number;
        k++;
    }
    *count = k;
    return 1;
}

/* ---- the Python type ---- */

static int Decoder_init(Decoder *d, PyObject *args, PyObject *kwds) {
    static char *names[] = {"tally", NULL};
    int tally = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p", names, &tally)) return -1;
    d->tally = tally;
    return 0;
}

static void Decoder_dealloc(Decoder *d) {
    for (Py_ssize_t i = 0; i < d->n_tags; i++) {
        Py_XDECREF(d->tags[i].name);
        PyMem_Free(d->tags[i].seen);
    }
    PyMem_Free(d->tags);
    PyMem_Free(d->slots);
    PyMem_Free(d->pending);
    Py_TYPE(d)->tp_free((PyObject *)d);
}

static int tag_arg(Decoder *d, Py_ssize_t i) {
    if (i < 0 || i >= d->n_tags) {
        PyErr_SetString(PyExc_IndexError, "no such tag index");
        return 0;
    }
    return 1;
}

static PyObject *Decoder_index(Decoder *d, PyObject *arg) {
    Py_ssize_t size;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &size);
    if (!s) return NULL;
    Py_ssize_t i = tag_index(d, (const uint8_t *)s, (size_t)size);
    if (i == -2) return NULL;
    if (i < 0) {
        PyErr_SetString(PyExc_ValueError, "tag is not valid UTF-8");
        return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyObject *Decoder_learn(Decoder *d, PyObject *args) {
    Py_ssize_t i;
    PyObject *plugin;
    if (!PyArg_ParseTuple(args, "nU", &i, &plugin) || !tag_arg(d, i)) return NULL;
    if (!d->tags[i].known) {
        d->tags[i].known = 1;
        d->tags[i].scalars = PyUnicode_CompareWithASCIIString(plugin, "scalars") == 0;
    }
    Py_RETURN_NONE;
}

static PyObject *Decoder_name(Decoder *d, PyObject *arg) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (!tag_arg(d, i)) return NULL;
    Py_INCREF(d->tags[i].name);
    return d->tags[i].name;
}

static Py_ssize_t Decoder_len(Decoder *d) { return d->n_tags; }

static PyObject *Decoder_add(Decoder *d, PyObject *args) {
    Py_ssize_t i;
    long long step;
    if (!PyArg_ParseTuple(args, "nL", &i, &step) || !tag_arg(d, i)) return NULL;
    long long before = d->tags[i].duplicates;
    long long earlier = tally_value(&d->tags[i], step);
    if (earlier == -2) return PyErr_NoMemory();
    return Py_BuildValue("(NL)", PyBool_FromLong(d->tags[i].duplicates != before), earlier);
}

static PyObject *Decoder_step(Decoder *d, PyObject *arg) {
    long long step = PyLong_AsLongLong(arg);
    if (step == -1 && PyErr_Occurred()) return NULL;
    tally_step(d, step);
    Py_RETURN_NONE;
}

static PyObject *Decoder_wall(Decoder *d, PyObject *arg) {
    double wall = PyFloat_AsDouble(arg);
    if (wall == -1.0 && PyErr_Occurred()) return NULL;
    tally_wall(d, wall);
    Py_RETURN_NONE;
}

static PyObject *Decoder_start(Decoder *d, PyObject *arg) {
    long long step = PyLong_AsLongLong(arg);
    if (step == -1 && PyErr_Occurred()) return NULL;
    long long earlier = 0;
    for (Py_ssize_t i = 0; i < d->n_tags; i++) {
        earlier += seen_at_or_after(&d->tags[i], step);
        d->tags[i].has_last = 0;
    }
    return PyLong_FromLongLong(earlier);
}

static PyObject *Decoder_stats(Decoder *d, PyObject *arg) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (!tag_arg(d, i)) return NULL;
    Tag *t = &d->tags[i];
    if (!t->count) return Py_BuildValue("(iOOi)", 0, Py_None, Py_None, 0);
    return Py_BuildValue("(LLLL)", t->count, t->lo, t->hi, t->duplicates);
}

static PyObject *maybe_long(int has, long long v) { return has ? PyLong_FromLongLong(v) : Py_NewRef(Py_None); }
static PyObject *maybe_float(int has, double v) { return has ? PyFloat_FromDouble(v) : Py_NewRef(Py_None); }

static PyObject *Decoder_ranges(Decoder *d, PyObject *unused) {
    return Py_BuildValue("(NNNN)", maybe_long(d->has_steps, d->step_lo), maybe_long(d->has_steps, d->step_hi),
                         maybe_float(d->has_walls, d->wall_lo), maybe_float(d->has_walls, d->wall_hi));
}

/* scan(buffer, at) -> (records, values, stop, end, columns, tags, backwards).
 *
 * Reads the intact scalar records from ``at``: ``records`` of them holding ``values`` values,
 * up to ``stop``. ``end`` > ``stop`` when the record at ``stop`` is intact (its CRCs check) but
 * not one this decoder reads: it ends at ``end``. Without tally, ``columns`` packs each value
 * (step int64, wall double, value double, tag int32, record int32; little-endian). ``tags``
 * lists the tag indexes the values name; with tally, ``backwards`` lists (record, tag, step,
 * earlier points) for each value whose tag's steps went back. */
static PyObject *Decoder_scan(Decoder *d, PyObject *args) {
    Py_buffer b;
    Py_ssize_t at;
    if (!PyArg_ParseTuple(args, "y*n", &b, &at)) return NULL;
    if (at < 0 || at > b.len) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "offset outside the buffer");
        return NULL;
    }
    const uint8_t *buf = b.buf;
    size_t len = (size_t)b.len, pos = (size_t)at, end = (size_t)at;
    long long records = 0, values = 0;
    Row *rows = NULL;
    size_t cap_rows = 0;
    PyObject *touched = PyList_New(0), *backwards = PyList_New(0), *result = NULL;
    if (!touched || !backwards) goto done;
    uint64_t mark = ++d->marks;
    for (;;) {
        if (len - pos < 16) break;
        uint64_t length = le64(buf + pos);
        if (length > RECORD_MAX || record_crc(buf + pos, 8) != le32(buf + pos + 8)) break;
        if (length > len - pos - 16) break;
        const uint8_t *data = buf + pos + 12;
        if (record_crc(data, (size_t)length) != le32(data + length)) break;
        size_t size = (size_t)length + 16;
        int64_t step;
        double wall;
        size_t count = 0;
        int ok = SCAN_DECODES ? decode_event(d, data, (size_t)length, &step, &wall, &count) : 0;
        if (ok < 0) goto done;
        if (!ok) {
            end = pos + size;
            break;
        }
        if (d->tally) {
            tally_wall(d, wall);
            tally_step(d, step);
        } else if (count) {
            if ((size_t)values + count > cap_rows) {
                size_t cap = cap_rows ? cap_rows * 2 : 4096;
                while (cap < (size_t)values + count) cap *= 2;
                Row *grown = PyMem_Realloc(rows, cap * sizeof *grown);
                if (!grown) {
                    PyErr_NoMemory();
                    goto done;
                }
                rows = grown;
                cap_rows = cap;
            }
        }
        for (size_t k = 0; k < count; k++) {
            int32_t index = d->pending[k].tag;
            Tag *t = &d->tags[index];
            if (t->mark != mark) {
                t->mark = mark;
                PyObject *i = PyLong_FromLong(index);
                if (!i || PyList_Append(touched, i) < 0) {
                    Py_XDECREF(i);
                    goto done;
                }
                Py_DECREF(i);
            }
            if (d->tally) {
                long long earlier = tally_value(t, step);
                if (earlier == -2) {
                    PyErr_NoMemory();
                    goto done;
                }
                if (earlier >= 0) {
                    PyObject *item = Py_BuildValue("(LiLL)", records, index, (long long)step, earlier);
                    if (!item || PyList_Append(backwards, item) < 0) {
                        Py_XDECREF(item);
                        goto done;
                    }
                    Py_DECREF(item);
                }
            } else {
                Row *r = &rows[values + k];
                r->step = step;
                r->wall = wall;
                r->value = d->pending[k].value;
                r->tag = index;
                r->record = (int32_t)records;
            }
        }
        values += (long long)count;
        records++;
        pos += size;
        end = pos;
    }
    PyObject *columns = d->tally ? Py_NewRef(Py_None)
                                 : PyBytes_FromStringAndSize((const char *)rows, (Py_ssize_t)((size_t)values * sizeof(Row)));
    if (columns)
        result = Py_BuildValue("(LLnnNOO)", records, values, (Py_ssize_t)pos, (Py_ssize_t)end, columns, touched, backwards);
done:
    PyMem_Free(rows);
    Py_XDECREF(touched);
    Py_XDECREF(backwards);
    PyBuffer_Release(&b);
    return result;
}

/* ---- CSV rows as events export writes them ---- */

typedef struct {
    char *p;
    size_t n, cap;
} Text;

static int text_room(Text *t, size_t n) {
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 1 << 16;
        while (cap < t->n + n) cap *= 2;
        char *grown = PyMem_Realloc(t->p, cap);
        if (!grown) {
            PyErr_NoMemory();
            return 0;
        }
        t->p = grown;
        t->cap = cap;
    }
    return 1;
}

static int text_put(Text *t, const char *s, size_t n) {
    if (!text_room(t, n)) return 0;
    memcpy(t->p + t->n, s, n);
    t->n += n;
    return 1;
}

static const uint64_t POW10[18] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
                                   100000000ull, 1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull,
                                   10000000000000ull, 100000000000000ull, 1000000000000000ull,
                                   10000000000000000ull, 100000000000000000ull};

static const uint64_t POW5[28] = {1ull, 5ull, 25ull, 125ull, 625ull, 3125ull, 15625ull, 78125ull, 390625ull,
                                  1953125ull, 9765625ull, 48828125ull, 244140625ull, 1220703125ull, 6103515625ull,
                                  30517578125ull, 152587890625ull, 762939453125ull, 3814697265625ull,
                                  19073486328125ull, 95367431640625ull, 476837158203125ull, 2384185791015625ull,
                                  11920928955078125ull, 59604644775390625ull, 298023223876953125ull,
                                  1490116119384765625ull, 7450580596923828125ull};

#ifdef __SIZEOF_INT128__
typedef unsigned __int128 u128;

/* Whether a multiple of 10^j * 2^s lies in the rounding interval [lo, hi] (ends included when
 * ``closed``) of v = n * 2^s + r; below and above get the multiples next to v. */
static int multiple_in(uint64_t n, int s, int j, u128 lo, u128 hi, int closed, u128 *below, u128 *above) {
    u128 f = (u128)(n / POW10[j] * POW10[j]) << s, g = f + ((u128)POW10[j] << s);
    *below = f;
    *above = g;
    return f > lo || (closed && f == lo) || g < hi || (closed && g == hi);
}

/* repr(v) for a positive normal double from about 1e-11 to 2^53, into out (32 bytes): its
 * length, or 0 where it leaves the value to Python's own repr (outside that range, or a tie
 * between two shortest candidates). The exact rational arithmetic of the shortest-digits
 * definition, in 128 bits: v * 10^k * 2^s and the midpoints to v's neighbours are integers;
 * the shortest decimal is the coarsest multiple of 10^j * 2^s between the midpoints (they
 * included when v's mantissa is even, as round-half-even reads them back), the nearest to v. */
static int short_repr(double v, char *out) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    int exponent = (int)((bits >> 52) & 0x7FF);
    if (bits >> 63 || exponent == 0 || exponent == 0x7FF) return 0;
    uint64_t m = (bits & ((1ull << 52) - 1)) | (1ull << 52);
    int e = exponent - 1075;
    /* k: v * 10^k has 17 integer digits (estimated from the binary exponent, then corrected) */
    int k = 16 - (int)floor((e + 52) * 0.30102999566398119521);
    uint64_t n = 0;
    int s = 0;
    u128 scaled = 0, p5 = 0;
    for (int tries = 0; tries < 3; tries++) {
        if (k < 0 || k > 27) return 0;
        s = 2 - e - k;
        if (s < 1 || s > 64) return 0;
        p5 = POW5[k];
        scaled = ((u128)m << 2) * p5;
        u128 whole = scaled >> s;
        if (whole >= POW10[17]) {
            k--;
        } else if (whole < POW10[16]) {
            k++;
        } else {
            n = (uint64_t)whole;
            break;
        }
    }
    if (!n) return 0;
    int closed = !(m & 1);
    u128 hi = scaled + 2 * p5, lo = scaled - ((m == (1ull << 52) && exponent > 1) ? p5 : 2 * p5);
    u128 below, above;
    /* the property holds at j = 0 and fails past the largest j: find that j (most values of
     * float32 origin stop at 0 or 1, so those are tried first) */
    int low = 0, high = 17;
    if (!multiple_in(n, s, 1, lo, hi, closed, &below, &above))
        high = 0;
    else
        low = 1;
    while (low < high) {
        int mid = (low + high + 1) / 2;
        if (multiple_in(n, s, mid, lo, hi, closed, &below, &above))
            low = mid;
        else
            high = mid - 1;
    }
    int j = low;
    multiple_in(n, s, j, lo, hi, closed, &below, &above);
    int in_below = below > lo || (closed && below == lo), in_above = above < hi || (closed && above == hi);
    uint64_t digits = n / POW10[j];
    if (in_below && in_above) {
        u128 d_below = scaled - below, d_above = above - scaled;
        if (d_below == d_above) return 0;
        if (d_above < d_below) digits++;
    } else if (in_above) {
        digits++;
    } else if (!in_below) {
        return 0;
    }
    int power = j - k; /* v ~ digits * 10^power */
    while (digits % 10 == 0) {
        digits /= 10;
        power++;
    }
    char text[24];
    int nd = 0;
    for (uint64_t d = digits; d; d /= 10) text[sizeof text - 1 - nd++] = (char)('0' + d % 10);
    const char *ds = text + sizeof text - nd;
    int decpt = nd + power, len = 0; /* v = 0.ds * 10^decpt */
    if (decpt > 16 || decpt <= -4) { /* as repr: d.ddde+XX */
        out[len++] = ds[0];
        if (nd > 1) {
            out[len++] = '.';
            memcpy(out + len, ds + 1, (size_t)nd - 1);
            len += nd - 1;
        }
        len += sprintf(out + len, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
    } else if (decpt <= 0) {
        out[len++] = '0';
        out[len++] = '.';
        memset(out + len, '0', (size_t)-decpt);
        len += -decpt;
        memcpy(out + len, ds, (size_t)nd);
        len += nd;
    } else if (decpt < nd) {
        memcpy(out + len, ds, (size_t)decpt);
        len += decpt;
        out[len++] = '.';
        memcpy(out + len, ds + decpt, (size_t)(nd - decpt));
        len += nd - decpt;
    } else {
        memcpy(out + len, ds, (size_t)nd);
        len += nd;
        memset(out + len, '0', (size_t)(decpt - nd));
        len += decpt - nd;
        out[len++] = '.';
        out[len++] = '0';
    }
    return len;
}
#endif

/* As repr(float): the shortest text that reads back as the same double. */
static int text_float(Text *t, double v) {
#ifdef __SIZEOF_INT128__
    char quick[40];
    int n;
    if (v < 0) {
        n = short_repr(-v, quick + 1);
        quick[0] = '-';
        if (n) return text_put(t, quick, (size_t)n + 1);
    } else if ((n = short_repr(v, quick)) != 0) {
        return text_put(t, quick, (size_t)n);
    }
#endif
    char *s = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!s) return 0;
    int ok = text_put(t, s, strlen(s));
    PyMem_Free(s);
    return ok;
}

static int text_int(Text *t, long long v) {
    char digits[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) digits[sizeof digits - 1 - n++] = '-';
    return text_put(t, digits + sizeof digits - n, (size_t)n);
}

/* csv(columns, prefixes) -> bytes (UTF-8): one CSV line per packed value: prefixes[tag] (the run, tag and
 * kind fields as csv.writer writes them, with their trailing comma), then step, wall_time and
 * value as csv.writer writes an int and floats (repr), and "number". */
static PyObject *py_csv(PyObject *self, PyObject *args) {
    Py_buffer b;
    PyObject *prefixes;
    if (!PyArg_ParseTuple(args, "y*O!", &b, &PyList_Type, &prefixes)) return NULL;
    PyObject *result = NULL;
    Text t = {NULL, 0, 0};
    if (b.len % (Py_ssize_t)sizeof(Row)) {
        PyErr_SetString(PyExc_ValueError, "columns are not whole rows");
        goto done;
    }
    size_t n = (size_t)b.len / sizeof(Row);
    for (size_t i = 0; i < n; i++) {
        Row r;
        memcpy(&r, (const char *)b.buf + i * sizeof(Row), sizeof r);
        if (r.tag < 0 || r.tag >= PyList_GET_SIZE(prefixes)) {
            PyErr_SetString(PyExc_IndexError, "no prefix for a tag index");
            goto done;
        }
        PyObject *prefix = PyList_GET_ITEM(prefixes, r.tag);
        if (!PyBytes_Check(prefix)) {
            PyErr_SetString(PyExc_TypeError, "prefixes must be bytes");
            goto done;
        }
        if (!text_room(&t, (size_t)PyBytes_GET_SIZE(prefix) + 128)) goto done;
        memcpy(t.p + t.n, PyBytes_AS_STRING(prefix), (size_t)PyBytes_GET_SIZE(prefix));
        t.n += (size_t)PyBytes_GET_SIZE(prefix);
        if (!text_int(&t, r.step) || !text_put(&t, ",", 1) || !text_float(&t, r.wall) || !text_put(&t, ",", 1) ||
            !text_float(&t, r.value) || !text_put(&t, ",number\r\n", 9))
            goto done;
    }
    result = PyBytes_FromStringAndSize(t.p ? t.p : "", (Py_ssize_t)t.n);
done:
    PyMem_Free(t.p);
    PyBuffer_Release(&b);
    return result;
}

static PyMethodDef Decoder_methods[] = {
    {"scan", (PyCFunction)Decoder_scan, METH_VARARGS, "scan(buffer, at) -> (records, values, stop, end, columns, tags, backwards)"},
    {"index", (PyCFunction)Decoder_index, METH_O, "index(tag) -> int: the tag's index, added when new."},
    {"name", (PyCFunction)Decoder_name, METH_O, "name(index) -> str."},
    {"learn", (PyCFunction)Decoder_learn, METH_VARARGS, "learn(index, plugin): the tag's plugin, from its first metadata."},
    {"add", (PyCFunction)Decoder_add, METH_VARARGS, "add(index, step) -> (repeated, earlier or -1): tally one value."},
    {"step", (PyCFunction)Decoder_step, METH_O, "step(step): a summary record's step, into the run's range."},
    {"wall", (PyCFunction)Decoder_wall, METH_O, "wall(wall_time): a record's wall time, into the run's range."},
    {"start", (PyCFunction)Decoder_start, METH_O, "start(step) -> earlier points at or after it: a SessionLog.START."},
    {"stats", (PyCFunction)Decoder_stats, METH_O, "stats(index) -> (count, step_min, step_max, repeated steps)."},
    {"ranges", (PyCFunction)Decoder_ranges, METH_NOARGS, "ranges() -> (step_min, step_max, wall_start, wall_end)."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Decoder_sequence = {.sq_length = (lenfunc)Decoder_len};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gpudoc.events._scan.Decoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Decoder(tally=False): reads scalar event records (see the module's doc).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_methods = Decoder_methods,
    .tp_as_sequence = &Decoder_sequence,
};

/* repr(x) -> str: a float as csv() writes it (for tests: it must equal repr). */
static PyObject *py_repr(PyObject *self, PyObject *arg) {
    double v = PyFloat_AsDouble(arg);
    if (v == -1.0 && PyErr_Occurred()) return NULL;
    Text t = {NULL, 0, 0};
    PyObject *result = text_float(&t, v) ? PyUnicode_FromStringAndSize(t.p, (Py_ssize_t)t.n) : NULL;
    PyMem_Free(t.p);
    return result;
}

static PyMethodDef methods[] = {
    {"repr", py_repr, METH_O, "repr(x) -> str: a float as csv() writes it (equal to repr(x))."},
    {"csv", py_csv, METH_VARARGS, "csv(columns, prefixes) -> bytes: export's CSV lines of packed values, UTF-8."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan",
                                    "gpudoc's compiled reader of scalar event records (events info and export).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__scan(void) {
    crc32c_setup();
    if (PyType_Ready(&DecoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Decoder", (PyObject *)&DecoderType) < 0 ||
        PyModule_AddIntConstant(m, "ROW_SIZE", (long)sizeof(Row)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
