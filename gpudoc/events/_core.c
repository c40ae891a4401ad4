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
#include <stdlib.h>
#include <string.h>

#include "_crc32c.h"

#ifdef CRC32C_X86
#define HAVE_SSE42_PATH 1
#endif

#define MASK_DELTA 0xA282EAD8u
#define HEADER 12
#define FOOTER 4
#define MAX_RECORD ((uint64_t)1 << 31)

static inline uint64_t load64(const unsigned char *p) { return crc32c_load64(p); }

static inline uint32_t load32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint32_t mask(uint32_t c) { return ((c >> 15) | (c << 17)) + MASK_DELTA; }

static inline uint32_t masked(const unsigned char *p, size_t n) { return mask(crc32c(0, p, n)); }

/* The data length of an intact record header at p (n bytes available), or -1. */
static inline int64_t header_length(const unsigned char *p, size_t n) {
    if (n < HEADER) return -1;
    uint64_t length = load64(p);
    if (length > MAX_RECORD || masked(p, 8) != load32(p + 8)) return -1;
    return (int64_t)length;
}

/* Status of the record at p with n bytes available: its framed size when complete and both
 * CRCs check, else 0 (Python then looks at it: damage, a cut-off end, or more bytes to read). */
static inline size_t intact_crc(const unsigned char *p, size_t n, uint32_t *data_crc) {
    int64_t length = header_length(p, n);
    if (length < 0) return 0;
    if ((uint64_t)length > n - HEADER || (uint64_t)length + FOOTER > n - HEADER) return 0;
    size_t end = HEADER + (size_t)length;
    uint32_t c = crc32c(0, p + HEADER, (size_t)length);
    if (mask(c) != load32(p + end)) return 0;
    *data_crc = c;
    return end + FOOTER;
}

static inline size_t intact(const unsigned char *p, size_t n) {
    uint32_t unused;
    return intact_crc(p, n, &unused);
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

/* Whether d[pos:end] is an old-style Summary.Image value field (tensorboardX's and torch's
 * add_image write them) whose height, width and colorspace varints and encoded bytes, each
 * optional, come in field order and fill it. */
static int plain_image(const unsigned char *d, size_t end, size_t pos) {
    static const unsigned char keys[3] = {0x08, 0x10, 0x18};
    uint64_t length, value;
    if (pos >= end || d[pos++] != 0x22 || !varint(d, end, &pos, &length) || length != end - pos) return 0;
    for (int k = 0; k < 3; k++) {
        if (pos < end && d[pos] == keys[k]) {
            pos++;
            if (!varint(d, end, &pos, &value)) return 0;
        }
    }
    if (pos == end) return 1;
    return d[pos++] == 0x22 && varint(d, end, &pos, &length) && length == end - pos;
}

/* Whether the summary at d[pos] (the record's last field) is nothing but values of the form
 * {tag (ASCII), simple_value or an old-style image}: no value carries SummaryMetadata, and
 * protobuf parses it (an ASCII tag is valid UTF-8). trim's Python then drops such a record,
 * out of range, with no change to what it remembers; anything else is left to it. */
static int plain_values(const unsigned char *d, size_t size, size_t pos) {
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
        if (!(end - pos == 5 && d[pos] == 0x15) && !plain_image(d, end, pos)) return 0;
        pos = end;
    }
    return 1;
}

static int contains(const unsigned char *hay, size_t n, const char *needle, size_t m) {
    if (m == 0) return 1;
    if (m > n) return 0;
    return memmem(hay, n, needle, m) != NULL;
}

typedef struct {
    const unsigned char *s;
    size_t m;
} Needle;

#define MAX_NEEDLES 8

/* Whether any of the k needles occurs in hay[0:n]. */
static int any_needle(const unsigned char *hay, size_t n, const Needle *nd, int k) {
    for (int j = 0; j < k; j++)
        if (contains(hay, n, (const char *)nd[j].s, nd[j].m)) return 1;
    return 0;
}

static int has_avx2;

#ifdef HAVE_SSE42_PATH
/* any_needle, 32 start positions at a time: a position is a candidate for a needle when the
 * needle's first byte is there and its last byte where it would end, and only candidates are
 * compared in full (on image or tensor bytes there are few). Every load stays inside hay: the
 * loop runs while the farthest one (a block at the longest needle's end) ends before n, and the
 * start positions after it go to any_needle. */
__attribute__((target("avx2"))) static int any_needle_avx2(const unsigned char *hay, size_t n, const Needle *nd,
                                                          int k) {
    size_t longest = 0;
    for (int j = 0; j < k; j++) {
        if (nd[j].m == 0) return 1;
        if (nd[j].m > longest) longest = nd[j].m;
    }
    size_t i = 0;
    if (k <= MAX_NEEDLES && n >= longest + 32) {
        __m256i first[MAX_NEEDLES], last[MAX_NEEDLES];
        for (int j = 0; j < k; j++) {
            first[j] = _mm256_set1_epi8((char)nd[j].s[0]);
            last[j] = _mm256_set1_epi8((char)nd[j].s[nd[j].m - 1]);
        }
        for (; i + longest + 31 <= n; i += 32) {
            __m256i block = _mm256_loadu_si256((const __m256i *)(hay + i));
            __m256i hit = _mm256_setzero_si256();
            for (int j = 0; j < k; j++) {
                __m256i end = _mm256_loadu_si256((const __m256i *)(hay + i + nd[j].m - 1));
                hit = _mm256_or_si256(hit, _mm256_and_si256(_mm256_cmpeq_epi8(block, first[j]),
                                                            _mm256_cmpeq_epi8(end, last[j])));
            }
            uint32_t bits = (uint32_t)_mm256_movemask_epi8(hit);
            while (bits) {
                size_t at = i + (size_t)__builtin_ctz(bits);
                bits &= bits - 1;
                for (int j = 0; j < k; j++)
                    if (at + nd[j].m <= n && !memcmp(hay + at, nd[j].s, nd[j].m)) return 1;
            }
        }
    }
    return any_needle(hay + i, n - i, nd, k);
}
#endif

static int has_avx512;

#ifdef HAVE_SSE42_PATH
/* any_needle_avx2, 64 start positions at a time (AVX-512BW compares into bit masks). */
__attribute__((target("avx512bw"))) static int any_needle_avx512(const unsigned char *hay, size_t n,
                                                                const Needle *nd, int k) {
    size_t longest = 0;
    for (int j = 0; j < k; j++) {
        if (nd[j].m == 0) return 1;
        if (nd[j].m > longest) longest = nd[j].m;
    }
    size_t i = 0;
    if (k >= 1 && k <= MAX_NEEDLES && n >= longest + 64) {
        __m512i first[MAX_NEEDLES], last[MAX_NEEDLES];
        for (int j = 0; j < k; j++) {
            first[j] = _mm512_set1_epi8((char)nd[j].s[0]);
            last[j] = _mm512_set1_epi8((char)nd[j].s[nd[j].m - 1]);
        }
        for (; i + longest + 63 <= n; i += 64) {
            /* A byte of (block ^ first) | (end ^ last) is 0 where that needle's first and last
             * bytes both match; the least over the needles is 0 at every candidate. (Vector
             * logic runs on two ports; byte compares into masks on one.) */
            __m512i block = _mm512_loadu_si512((const void *)(hay + i));
            __m512i least = _mm512_ternarylogic_epi64(
                block, first[0], _mm512_xor_si512(_mm512_loadu_si512((const void *)(hay + i + nd[0].m - 1)), last[0]),
                0xBE);
            for (int j = 1; j < k; j++) {
                __m512i end = _mm512_loadu_si512((const void *)(hay + i + nd[j].m - 1));
                least = _mm512_min_epu8(least, _mm512_ternarylogic_epi64(block, first[j],
                                                                         _mm512_xor_si512(end, last[j]), 0xBE));
            }
            __mmask64 hit = _mm512_testn_epi8_mask(least, least);
            while (hit) {
                size_t at = i + (size_t)__builtin_ctzll(hit);
                hit &= hit - 1;
                for (int j = 0; j < k; j++)
                    if (at + nd[j].m <= n && !memcmp(hay + at, nd[j].s, nd[j].m)) return 1;
            }
        }
    }
    return any_needle(hay + i, n - i, nd, k);
}
#endif

/* Whether any of ``marks`` (a tuple of bytes, as decide() got it) occurs in hay[0:n]. */
static int any_mark(const unsigned char *hay, size_t n, const Needle *nd, int k) {
#ifdef HAVE_SSE42_PATH
    if (has_avx512) return any_needle_avx512(hay, n, nd, k);
    if (has_avx2) return any_needle_avx2(hay, n, nd, k);
#endif
    return any_needle(hay, n, nd, k);
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

/* extend_with(method, crc, buffer): extend() with one of ``crc_methods`` (the ones this CPU and
 * OS can run), for the tests to check each. */
static PyObject *py_extend_with(PyObject *self, PyObject *args) {
    const char *name;
    unsigned long crc;
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "sky*", &name, &crc, &b)) return NULL;
    int method = crc32c_lookup(name);
    if (method < 0) {
        PyBuffer_Release(&b);
        PyErr_Format(PyExc_ValueError, "CRC-32C method %s: not one this CPU runs", name);
        return NULL;
    }
    uint32_t c;
    Py_BEGIN_ALLOW_THREADS
    c = ~crc_raw(method, ~(uint32_t)crc, b.buf, (size_t)b.len);
    Py_END_ALLOW_THREADS
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

/* combine(crc_a, crc_b, length_b): the CRC-32C of A then B from extend(0, A), extend(0, B) and
 * B's length (pieces of one buffer CRC'd apart, e.g. on two threads). */
static PyObject *py_combine(PyObject *self, PyObject *args) {
    unsigned long crc_a, crc_b;
    unsigned long long length_b;
    if (!PyArg_ParseTuple(args, "kkK", &crc_a, &crc_b, &length_b)) return NULL;
    /* extend(a, B) = ~raw(~a, B) and raw(c, B) = raw(0, B) ^ c·x^(8n): the start register's
     * share, moved over B, is added to B's CRC from 0. */
    return PyLong_FromUnsignedLong(multmodp(x8n(length_b), (uint32_t)crc_a) ^ (uint32_t)crc_b);
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

/* What trim decides without parsing (see py_trim_scan), and what trim_pass tracks besides. */
typedef struct {
    long long base, first, last, stop;
    double tstart, tend;
    int bounds, keep_run_level, pending;
    unsigned int run_level_fields;
    PyObject *marks;            /* a tuple of bytes */
    const char *needle;         /* trim_pass: searched in every record it decides; NULL: none */
    size_t needle_length;
    int needle_is_mark;         /* the needle is one of the marks (a summary holding it stops the loop) */
} Decide;

typedef struct {
    size_t pos;
    long long records, kept;
    uint32_t crc;               /* trim_pass: CRC-32C of the kept bytes, continued */
    int mentions;               /* trim_pass: a decided record holds the needle */
} Decided;

/* A kept record of this many data bytes or more joins its data CRC (computed by the check) to
 * the output's CRC instead of being CRC'd a second time. */
#define JOIN_MIN 2048

/* The loop of trim_scan and trim_pass: decides intact records from d->pos, appending the
 * (start, end, records) runs of kept ones to ``spans``; 0 on a Python error. */
static int decide(const unsigned char *buf, size_t len, const Decide *a, Decided *d, PyObject *spans) {
    size_t pos = d->pos, span_start = pos, span_end = pos;
    long long span_records = 0;
    Py_ssize_t nmarks = PyTuple_GET_SIZE(a->marks);
    Needle marks[MAX_NEEDLES];
    int fits = nmarks <= MAX_NEEDLES;
    for (Py_ssize_t i = 0; fits && i < nmarks; i++) {
        PyObject *m = PyTuple_GET_ITEM(a->marks, i);
        marks[i].s = (const unsigned char *)PyBytes_AS_STRING(m);
        marks[i].m = (size_t)PyBytes_GET_SIZE(m);
    }
    for (;;) {
        if (a->stop >= 0 && a->base + (long long)pos == a->stop) break;
        uint32_t data_crc = 0;
        size_t size = intact_crc(buf + pos, len - pos, &data_crc);
        if (!size) break;
        const unsigned char *data = buf + pos + HEADER;
        size_t n = size - HEADER - FOOTER;
        Peek p;
        if (!peek(data, n, &p)) break;
        /* As TrimSpec.in_range: a NaN wall time passes the start bound and fails the end one. */
        int in_range = !((a->bounds & 1) && p.step < a->first) && !((a->bounds & 2) && p.step > a->last) &&
                       !((a->bounds & 4) && p.wall < a->tstart) && !((a->bounds & 8) && !(p.wall <= a->tend));
        int keep, summary = 0;
        if (a->run_level_fields & (1u << p.what)) {
            keep = a->keep_run_level;
        } else if (p.what != 5) {
            keep = in_range;
        } else {
            int run_level = 0;
            if (fits) {
                run_level = any_mark(data, n, marks, (int)nmarks);
            } else {
                for (Py_ssize_t i = 0; i < nmarks && !run_level; i++) {
                    PyObject *m = PyTuple_GET_ITEM(a->marks, i);
                    run_level = contains(data, n, PyBytes_AS_STRING(m), (size_t)PyBytes_GET_SIZE(m));
                }
            }
            if (run_level) break;
            summary = 1;
            if (!in_range) {
                if (memchr(data, 0x4a, n) && !plain_values(data, n, p.at)) break;
                keep = 0;
            } else if (!a->pending) {
                keep = 1;
            } else {
                break;
            }
        }
        if (a->needle && !d->mentions && !(summary && a->needle_is_mark))
            d->mentions = contains(data, n, a->needle, a->needle_length);
        if (keep) {
            if (span_end != pos) {
                if (span_end > span_start && !add_span(spans, span_start, span_end, span_records)) return 0;
                span_start = pos;
                span_records = 0;
            }
            span_end = pos + size;
            span_records++;
            d->kept++;
            if (a->needle) {
                if (n >= JOIN_MIN) {
                    uint32_t c = combine(crc32c(d->crc, buf + pos, HEADER), data_crc, n);
                    d->crc = crc32c(c, buf + pos + HEADER + n, FOOTER);
                } else {
                    d->crc = crc32c(d->crc, buf + pos, size);
                }
            }
        }
        d->records++;
        pos += size;
    }
    if (span_end > span_start && !add_span(spans, span_start, span_end, span_records)) return 0;
    d->pos = pos;
    return 1;
}

static int check_marks(PyObject *marks) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(marks); i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(marks, i))) {
            PyErr_SetString(PyExc_TypeError, "marks must be bytes");
            return 0;
        }
    }
    return 1;
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
    Decide a = {0};
    if (!PyArg_ParseTuple(args, "y*nLiLLddIppO!L", &b, &at, &a.base, &a.bounds, &a.first, &a.last, &a.tstart,
                          &a.tend, &a.run_level_fields, &a.keep_run_level, &a.pending, &PyTuple_Type, &a.marks,
                          &a.stop))
        return NULL;
    if (!check_at(at, b.len) || !check_marks(a.marks)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    Decided d = {(size_t)at, 0, 0, 0, 0};
    PyObject *spans = PyList_New(0);
    if (!spans || !decide(b.buf, (size_t)b.len, &a, &d, spans)) {
        Py_XDECREF(spans);
        PyBuffer_Release(&b);
        return NULL;
    }
    PyBuffer_Release(&b);
    return Py_BuildValue("(NLLn)", spans, d.records, d.kept, (Py_ssize_t)d.pos);
}

/* trim_pass(buffer, at, base, bounds, first, last, start, end, run_level_fields, keep_run_level, pending,
 *           marks, stop, crc, needle)
 *   -> (spans, records, kept, at, crc, mentions)
 * trim_scan, and in the same pass over the bytes: ``crc`` (the CRC-32C of the output so far)
 * continued over every kept record, and whether a record it decided holds ``needle`` (a
 * summary it decides never holds a mark: it stops there instead). */
static PyObject *py_trim_pass(PyObject *self, PyObject *args) {
    Py_buffer b, needle;
    Py_ssize_t at;
    unsigned long crc;
    Decide a = {0};
    if (!PyArg_ParseTuple(args, "y*nLiLLddIppO!Lky*", &b, &at, &a.base, &a.bounds, &a.first, &a.last, &a.tstart,
                          &a.tend, &a.run_level_fields, &a.keep_run_level, &a.pending, &PyTuple_Type, &a.marks,
                          &a.stop, &crc, &needle))
        return NULL;
    PyObject *spans = NULL;
    if (!check_at(at, b.len) || !check_marks(a.marks) || !(spans = PyList_New(0))) goto fail;
    a.needle = needle.buf;
    a.needle_length = (size_t)needle.len;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(a.marks); i++) {
        PyObject *m = PyTuple_GET_ITEM(a.marks, i);
        if (PyBytes_GET_SIZE(m) == needle.len && !memcmp(PyBytes_AS_STRING(m), needle.buf, (size_t)needle.len))
            a.needle_is_mark = 1;
    }
    Decided d = {(size_t)at, 0, 0, (uint32_t)crc, 0};
    if (!decide(b.buf, (size_t)b.len, &a, &d, spans)) goto fail;
    PyBuffer_Release(&b);
    PyBuffer_Release(&needle);
    return Py_BuildValue("(NLLnkO)", spans, d.records, d.kept, (Py_ssize_t)d.pos, (unsigned long)d.crc,
                         d.mentions ? Py_True : Py_False);
fail:
    Py_XDECREF(spans);
    PyBuffer_Release(&b);
    PyBuffer_Release(&needle);
    return NULL;
}

/* record_at(buffer, at) -> (length, framed): the data length of an intact header at ``at`` (-1:
 * none, or too few bytes for one) and the framed size of an intact record there (0: none). */
static PyObject *py_record_at(PyObject *self, PyObject *args) {
    Py_buffer b;
    Py_ssize_t at;
    if (!PyArg_ParseTuple(args, "y*n", &b, &at)) return NULL;
    if (!check_at(at, b.len)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)b.buf + at;
    size_t n = (size_t)(b.len - at);
    long long length = header_length(p, n);
    size_t framed = length < 0 ? 0 : intact(p, n);
    PyBuffer_Release(&b);
    return Py_BuildValue("(Ln)", length, (Py_ssize_t)framed);
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
    {"combine", py_combine, METH_VARARGS, "combine(crc_a, crc_b, length_b): the CRC-32C of A then B."},
    {"extend_with", py_extend_with, METH_VARARGS, "extend_with(method, crc, buffer): extend() one way (crc_methods)."},
    {"scan", py_scan, METH_VARARGS, "scan(buffer, at, base) -> (records, at): the intact records from at."},
    {"resync", py_resync, METH_VARARGS, "resync(buffer, start) -> offset or -1: the next record start."},
    {"trim_scan", py_trim_scan, METH_VARARGS, "Trim's keep/drop decision over intact records, as spans."},
    {"trim_pass", py_trim_pass, METH_VARARGS, "trim_scan, continuing the output's CRC and searching a needle."},
    {"record_at", py_record_at, METH_VARARGS, "(header's data length or -1, intact record's size or 0) at an offset."},
    {"peek", py_peek, METH_VARARGS, "(step, wall_time, what) from a record's leading fields, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_core", "gpudoc's compiled event-record core.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__core(void) {
    crc32c_setup();
#ifdef HAVE_SSE42_PATH
    has_avx2 = __builtin_cpu_supports("avx2");
    /* GPUDOC_EVENTS_NO_AVX512: the AVX2 search where both exist (the tests run both). */
    const char *no_avx512 = getenv("GPUDOC_EVENTS_NO_AVX512");
    has_avx512 = __builtin_cpu_supports("avx512bw") && !(no_avx512 && *no_avx512);
#endif
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    const char *search = has_avx512 ? "AVX-512BW" : has_avx2 ? "AVX2" : "memmem";
    static const char *const described[CRC32C_METHODS] = {
        "slicing-by-8 table", "SSE4.2 crc32 instructions, one lane", "SSE4.2 crc32 instructions",
        "VPCLMULQDQ folding"};
    PyObject *methods_run = PyTuple_New(crc32c_best + 1);
    if (!methods_run) {
        Py_DECREF(m);
        return NULL;
    }
    for (int i = 0; i <= crc32c_best; i++) {
        PyObject *name = PyUnicode_FromString(crc32c_names[i]);
        if (!name) {
            Py_DECREF(methods_run);
            Py_DECREF(m);
            return NULL;
        }
        PyTuple_SET_ITEM(methods_run, i, name);
    }
    if (PyModule_AddObject(m, "crc_methods", methods_run) < 0) {
        Py_DECREF(methods_run);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "crc", described[crc32c_method]) < 0 ||
        PyModule_AddStringConstant(m, "crc_method", crc32c_names[crc32c_method]) < 0 ||
        PyModule_AddStringConstant(m, "search", search) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
