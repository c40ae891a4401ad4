/* The per-record loop of gpudoc's event-file reader, compiled: TFRecord framing, both masked
 * CRC-32Cs, the step/wall-time/kind peek and trim's keep/drop decision for whole records.
 *
 * Every function reads a caller's buffer of untrusted bytes: each read is checked against the
 * buffer's length first, and a length field is trusted only after its CRC checks and it is no
 * larger than MAX_RECORD. Anything this code cannot decide (a damaged or cut-off record, a record
 * trim must parse) is left where it is, and the Python caller handles it (gpudoc/events/records.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define HAVE_SSE42_PATH 1
#endif

#define MASK_DELTA 0xA282EAD8u
#define HEADER 12
#define FOOTER 4
#define MAX_RECORD ((uint64_t)1 << 31)

static uint32_t table[8][256];
static int hardware;

static void init_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
}

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t load32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

/* Slicing-by-8 over the raw (pre/post-inverted) CRC state. */
static uint32_t crc_table(uint32_t crc, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint64_t v = load64(p) ^ crc;
        crc = table[7][v & 0xFF] ^ table[6][(v >> 8) & 0xFF] ^ table[5][(v >> 16) & 0xFF] ^
              table[4][(v >> 24) & 0xFF] ^ table[3][(v >> 32) & 0xFF] ^ table[2][(v >> 40) & 0xFF] ^
              table[1][(v >> 48) & 0xFF] ^ table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#ifdef HAVE_SSE42_PATH
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

/* CRC-32C of n bytes continuing ``crc`` (0 to start), as google_crc32c.extend computes it. */
static uint32_t crc32c(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
#ifdef HAVE_SSE42_PATH
    if (hardware) return ~crc_hw(crc, p, n);
#endif
    return ~crc_table(crc, p, n);
}

static inline uint32_t masked(const unsigned char *p, size_t n) {
    uint32_t c = crc32c(0, p, n);
    return ((c >> 15) | (c << 17)) + MASK_DELTA;
}

/* The data length of an intact record header at p (n bytes available), or -1. */
static inline int64_t header_length(const unsigned char *p, size_t n) {
    if (n < HEADER) return -1;
    uint64_t length = load64(p);
    if (length > MAX_RECORD || masked(p, 8) != load32(p + 8)) return -1;
    return (int64_t)length;
}

/* Status of the record at p with n bytes available: its framed size when complete and both
 * CRCs check, else 0 (Python then looks at it: damage, a cut-off end, or more bytes to read). */
static inline size_t intact(const unsigned char *p, size_t n) {
    int64_t length = header_length(p, n);
    if (length < 0) return 0;
    if ((uint64_t)length > n - HEADER || (uint64_t)length + FOOTER > n - HEADER) return 0;
    size_t end = HEADER + (size_t)length;
    if (masked(p + HEADER, (size_t)length) != load32(p + end)) return 0;
    return end + FOOTER;
}

typedef struct {
    int64_t step;
    double wall;
    int what;
    size_t at; /* where the field ``what`` starts */
} Peek;

/* gpudoc.events.model.peek, byte for byte: 0 when the record does not lead with wall_time and
 * step in canonical order (or a step varint is longer than 64 bits), so trim parses it. */
static int peek(const unsigned char *d, size_t size, Peek *out) {
    size_t pos = 0;
    uint64_t step = 0;
    double wall = 0.0;
    if (size >= 9 && d[0] == 0x09) {
        uint64_t bits = load64(d + 1);
        memcpy(&wall, &bits, 8);
        pos = 9;
    }
    if (pos < size && d[pos] == 0x10) {
        pos++;
        unsigned shift = 0;
        for (;;) {
            if (pos >= size) return 0;
            unsigned char byte = d[pos++];
            step |= (uint64_t)(byte & 0x7F) << shift;
            if (byte < 0x80) break;
            shift += 7;
            if (shift > 63) return 0;
        }
    }
    out->step = (int64_t)step;
    out->wall = wall;
    out->at = pos;
    if (pos >= size) {
        out->what = 0;
        return 1;
    }
    unsigned char key = d[pos];
    if ((key & 7) != 2 || (key >> 3) < 3 || (key >> 3) > 10) return 0;
    out->what = key >> 3;
    return 1;
}

/* A varint at d[*pos] (end: one past the last byte allowed), at most 10 bytes; 0 if none. */
static int varint(const unsigned char *d, size_t end, size_t *pos, uint64_t *value) {
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*pos >= end) return 0;
        unsigned char byte = d[(*pos)++];
        v |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *value = v;
            return 1;
        }
    }
    return 0;
}

/* Whether the summary at d[pos] (the record's last field) is nothing but values of the form
 * {tag (ASCII), simple_value}: no value carries SummaryMetadata, and protobuf parses it (an
 * ASCII tag is valid UTF-8). trim's Python then drops such a record, out of range, with no
 * change to what it remembers; anything else is left to it. */
static int plain_scalars(const unsigned char *d, size_t size, size_t pos) {
    uint64_t length;
    if (pos >= size || d[pos++] != 0x2a || !varint(d, size, &pos, &length) || length != size - pos) return 0;
    while (pos < size) {
        uint64_t value_length;
        if (d[pos++] != 0x0a || !varint(d, size, &pos, &value_length) || value_length > size - pos) return 0;
        size_t end = pos + (size_t)value_length;
        if (pos < end && d[pos] == 0x0a) {
            uint64_t tag_length;
            pos++;
            if (!varint(d, end, &pos, &tag_length) || tag_length > end - pos) return 0;
            for (size_t i = 0; i < tag_length; i++)
                if (d[pos + i] >= 0x80) return 0;
            pos += (size_t)tag_length;
        }
        if (end - pos != 5 || d[pos] != 0x15) return 0;
        pos = end;
    }
    return 1;
}

static int contains(const unsigned char *hay, size_t n, const char *needle, size_t m) {
    if (m == 0) return 1;
    if (m > n) return 0;
    return memmem(hay, n, needle, m) != NULL;
}

static PyObject *py_masked_crc(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    uint32_t c;
    Py_BEGIN_ALLOW_THREADS
    c = masked(b.buf, (size_t)b.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

/* extend_table(crc, buffer): the table CRC whatever the CPU, for the tests to check it. */
static PyObject *py_extend_table(PyObject *self, PyObject *args) {
    unsigned long crc;
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "ky*", &crc, &b)) return NULL;
    uint32_t c = ~crc_table(~(uint32_t)crc, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyObject *py_extend(PyObject *self, PyObject *args) {
    unsigned long crc;
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "ky*", &crc, &b)) return NULL;
    uint32_t c;
    Py_BEGIN_ALLOW_THREADS
    c = crc32c((uint32_t)crc, b.buf, (size_t)b.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

/* Check that 0 <= at <= len. */
static int check_at(Py_ssize_t at, Py_ssize_t len) {
    if (at < 0 || at > len) {
        PyErr_SetString(PyExc_ValueError, "offset outside the buffer");
        return 0;
    }
    return 1;
}

/* scan(buffer, at, base) -> (records, at): every intact record from ``at`` as
 * ``(base + offset, data, framed)``, up to the first one that is not (or the buffer's end). */
static PyObject *py_scan(PyObject *self, PyObject *args) {
    Py_buffer b;
    Py_ssize_t at;
    long long base;
    if (!PyArg_ParseTuple(args, "y*nL", &b, &at, &base)) return NULL;
    if (!check_at(at, b.len)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    const unsigned char *buf = b.buf;
    size_t len = (size_t)b.len, pos = (size_t)at;
    PyObject *list = PyList_New(0);
    if (!list) goto fail;
    for (;;) {
        size_t size = intact(buf + pos, len - pos);
        if (!size) break;
        PyObject *rec = Py_BuildValue("(Ly#y#)", base + (long long)pos, buf + pos + HEADER,
                                      (Py_ssize_t)(size - HEADER - FOOTER), buf + pos, (Py_ssize_t)size);
        if (!rec || PyList_Append(list, rec) < 0) {
            Py_XDECREF(rec);
            goto fail;
        }
        Py_DECREF(rec);
        pos += size;
    }
    PyBuffer_Release(&b);
    return Py_BuildValue("(Nn)", list, (Py_ssize_t)pos);
fail:
    Py_XDECREF(list);
    PyBuffer_Release(&b);
    return NULL;
}

/* resync(buffer, start) -> offset or -1: where an intact record starts at or after ``start``
 * (or a header whose length CRC checks and whose record runs past the buffer). */
static PyObject *py_resync(PyObject *self, PyObject *args) {
    Py_buffer b;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "y*n", &b, &start)) return NULL;
    if (!check_at(start, b.len)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    const unsigned char *buf = b.buf;
    size_t len = (size_t)b.len;
    Py_ssize_t found = -1;
    Py_BEGIN_ALLOW_THREADS
    for (size_t c = (size_t)start; len >= HEADER && c <= len - HEADER; c++) {
        int64_t length = header_length(buf + c, len - c);
        if (length < 0) continue;
        if ((uint64_t)length + FOOTER > len - c - HEADER || intact(buf + c, len - c)) {
            found = (Py_ssize_t)c;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromSsize_t(found);
}

static int add_span(PyObject *spans, size_t start, size_t end, long long records) {
    PyObject *s = Py_BuildValue("(nnL)", (Py_ssize_t)start, (Py_ssize_t)end, records);
    if (!s) return 0;
    int ok = PyList_Append(spans, s) == 0;
    Py_DECREF(s);
    return ok;
}

/* trim_scan(buffer, at, base, bounds, first, last, start, end, run_level_fields, keep_run_level, pending,
 *           marks, stop)
 *   -> (spans, records, kept, at)
 * Decides intact records from ``at`` the way gpudoc.events.trim._Trimmer.record's fast branch
 * does, and stops (leaving ``at`` there) at the first record it cannot: one not intact, one
 * that needs parsing, or the one at absolute offset ``stop`` (-1: none). ``first``/``last``
 * bound the step and ``start``/``end`` the wall time, each only where its bit of ``bounds``
 * (1, 2, 4, 8) is set; ``run_level_fields`` has bit N set for each Event field N (3-10) that makes
 * a record run-level (model.RUN_LEVEL_FIELDS); field 5 is a summary. ``spans`` are (start, end, records) runs of kept records in the buffer. */
static PyObject *py_trim_scan(PyObject *self, PyObject *args) {
    Py_buffer b;
    Py_ssize_t at;
    long long base, first, last, stop;
    double tstart, tend;
    int bounds, keep_run_level, pending;
    unsigned int run_level_fields;
    PyObject *marks;
    if (!PyArg_ParseTuple(args, "y*nLiLLddIppO!L", &b, &at, &base, &bounds, &first, &last, &tstart, &tend,
                          &run_level_fields, &keep_run_level, &pending, &PyTuple_Type, &marks, &stop))
        return NULL;
    if (!check_at(at, b.len)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    Py_ssize_t nmarks = PyTuple_GET_SIZE(marks);
    for (Py_ssize_t i = 0; i < nmarks; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(marks, i))) {
            PyBuffer_Release(&b);
            PyErr_SetString(PyExc_TypeError, "marks must be bytes");
            return NULL;
        }
    }
    const unsigned char *buf = b.buf;
    size_t len = (size_t)b.len, pos = (size_t)at;
    size_t span_start = pos, span_end = pos;
    long long records = 0, kept = 0, span_records = 0;
    PyObject *spans = PyList_New(0);
    if (!spans) goto fail;
    for (;;) {
        if (stop >= 0 && base + (long long)pos == stop) break;
        size_t size = intact(buf + pos, len - pos);
        if (!size) break;
        const unsigned char *data = buf + pos + HEADER;
        size_t n = size - HEADER - FOOTER;
        Peek p;
        if (!peek(data, n, &p)) break;
        /* As TrimSpec.in_range: a NaN wall time passes the start bound and fails the end one. */
        int in_range = !((bounds & 1) && p.step < first) && !((bounds & 2) && p.step > last) &&
                       !((bounds & 4) && p.wall < tstart) && !((bounds & 8) && !(p.wall <= tend));
        int keep;
        if (run_level_fields & (1u << p.what)) {
            keep = keep_run_level;
        } else if (p.what != 5) {
            keep = in_range;
        } else {
            int run_level = 0;
            for (Py_ssize_t i = 0; i < nmarks && !run_level; i++) {
                PyObject *m = PyTuple_GET_ITEM(marks, i);
                run_level = contains(data, n, PyBytes_AS_STRING(m), (size_t)PyBytes_GET_SIZE(m));
            }
            if (run_level) break;
            if (!in_range) {
                if (memchr(data, 0x4a, n) && !plain_scalars(data, n, p.at)) break;
                keep = 0;
            } else if (!pending) {
                keep = 1;
            } else {
                break;
            }
        }
        if (keep) {
            if (span_end != pos) {
                if (span_end > span_start && !add_span(spans, span_start, span_end, span_records)) goto fail;
                span_start = pos;
                span_records = 0;
            }
            span_end = pos + size;
            span_records++;
            kept++;
        }
        records++;
        pos += size;
    }
    if (span_end > span_start && !add_span(spans, span_start, span_end, span_records)) goto fail;
    PyBuffer_Release(&b);
    return Py_BuildValue("(NLLn)", spans, records, kept, (Py_ssize_t)pos);
fail:
    Py_XDECREF(spans);
    PyBuffer_Release(&b);
    return NULL;
}

/* peek(data) -> (step, wall_time, what) or None: gpudoc.events.model.peek. */
static PyObject *py_peek(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    Peek p;
    int ok = peek(b.buf, (size_t)b.len, &p);
    PyBuffer_Release(&b);
    if (!ok) Py_RETURN_NONE;
    return Py_BuildValue("(Ldi)", (long long)p.step, p.wall, p.what);
}

static PyMethodDef methods[] = {
    {"masked_crc", py_masked_crc, METH_VARARGS, "TFRecord's masked CRC-32C of a buffer."},
    {"extend", py_extend, METH_VARARGS, "extend(crc, buffer): CRC-32C continued over a buffer."},
    {"extend_table", py_extend_table, METH_VARARGS, "extend() with the table, whatever the CPU."},
    {"scan", py_scan, METH_VARARGS, "scan(buffer, at, base) -> (records, at): the intact records from at."},
    {"resync", py_resync, METH_VARARGS, "resync(buffer, start) -> offset or -1: the next record start."},
    {"trim_scan", py_trim_scan, METH_VARARGS, "Trim's keep/drop decision over intact records, as spans."},
    {"peek", py_peek, METH_VARARGS, "(step, wall_time, what) from a record's leading fields, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_core", "gpudoc's compiled event-record core.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__core(void) {
    init_table();
#ifdef HAVE_SSE42_PATH
    __builtin_cpu_init();
    hardware = __builtin_cpu_supports("sse4.2");
#endif
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddStringConstant(m, "crc", hardware ? "SSE4.2 crc32 instructions" : "slicing-by-8 table") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
