/* CRC-32C (Castagnoli), as TFRecord frames use it, for gpudoc's compiled event cores (_core.c and
 * _scan.c each include it: everything here is static).
 *
 * Four ways, the fastest the CPU and OS support chosen at start (crc32c_setup):
 *   "vpclmulqdq": carry-less multiply folding of 512-bit lanes (AVX-512F + VPCLMULQDQ),
 *   "crc32":      three interleaved lanes of SSE4.2 crc32 instructions joined by GF(2) shifts,
 *   "crc32-1":    one lane of crc32 instructions (short buffers; the other two's tails),
 *   "table":      slicing-by-8 tables, any CPU.
 * GPUDOC_EVENTS_CRC=<name> starts with a slower one instead (for the tests; a name the CPU
 * cannot run is ignored).
 *
 * The arithmetic: bit-reflected, as the CRC register is (bit 31 of a 32-bit value is x^0). The
 * raw register (the CRC before its final inversion) of a message M is M(x)·x^32 mod P, so
 * appending n zero bits multiplies it by x^n mod P: pieces CRC'd apart can be joined, and a
 * 128-bit piece A of the message can be moved n bits on (folded) as A·x^n mod P without
 * changing the CRC, which is what the carry-less multiplications do. */
#ifndef GPUDOC_CRC32C_H
#define GPUDOC_CRC32C_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define CRC32C_X86 1
/* The folding way needs a compiler that knows VPCLMULQDQ (GCC 8+, clang 6+); older ones build
 * the others. */
#if defined(bit_VPCLMULQDQ) && (defined(__clang__) ? __clang_major__ >= 6 : __GNUC__ >= 8)
#define CRC32C_FOLDING 1
#endif
#endif

#define CRC32C_POLY 0x82F63B78u

enum { CRC32C_TABLE, CRC32C_ONE_LANE, CRC32C_LANES, CRC32C_FOLD, CRC32C_METHODS };
static const char *const crc32c_names[CRC32C_METHODS] = {"table", "crc32-1", "crc32", "vpclmulqdq"};
static int crc32c_best;   /* the fastest this CPU and OS can run */
static int crc32c_method; /* the one crc32c() uses */

static uint32_t crc32c_tables[8][256];
static uint32_t crc32c_x2n[64]; /* x^(2^k) mod P */

static inline uint64_t crc32c_load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* a·b mod P. */
static inline uint32_t multmodp(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (uint32_t m = 1u << 31; m; m >>= 1) {
        if (a & m) product ^= b;
        b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1;
    }
    return product;
}

/* x^n mod P. */
static inline uint32_t xpow(uint64_t n) {
    uint32_t p = 1u << 31; /* x^0 */
    for (unsigned k = 0; n && k < 64; k++, n >>= 1)
        if (n & 1) p = multmodp(crc32c_x2n[k], p);
    return p;
}

/* x^(8n) mod P: n zero bytes. */
static inline uint32_t x8n(uint64_t n) {
    uint32_t p = 1u << 31;
    for (unsigned k = 3; n && k < 64; k++, n >>= 1)
        if (n & 1) p = multmodp(crc32c_x2n[k], p);
    return p;
}

/* The raw register of A then B from those of A and B (B's from 0) and B's length. */
static inline uint32_t combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b) {
    return multmodp(x8n(length_b), crc_a) ^ crc_b;
}

/* Slicing-by-8 over the raw register. */
static inline uint32_t crc_table(uint32_t crc, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ crc32c_tables[0][(crc ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint64_t v = crc32c_load64(p) ^ crc;
        crc = crc32c_tables[7][v & 0xFF] ^ crc32c_tables[6][(v >> 8) & 0xFF] ^
              crc32c_tables[5][(v >> 16) & 0xFF] ^ crc32c_tables[4][(v >> 24) & 0xFF] ^
              crc32c_tables[3][(v >> 32) & 0xFF] ^ crc32c_tables[2][(v >> 40) & 0xFF] ^
              crc32c_tables[1][(v >> 48) & 0xFF] ^ crc32c_tables[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc32c_tables[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#ifdef CRC32C_X86
__attribute__((target("sse4.2"))) static inline uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t n) {
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

/* Raw register shifts over one lane of zeros, by table (a byte at a time). */
#define LONG_LANE 8192
#define SHORT_LANE 256
static uint32_t shift_long[4][256], shift_short[4][256];

static void init_shift(uint32_t t[4][256], uint64_t lane) {
    uint32_t factor = x8n(lane);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++) t[k][b] = multmodp(factor, b << (8 * k));
}

static inline uint32_t shifted(uint32_t t[4][256], uint32_t c) {
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
}

/* Three lanes of ``lane`` bytes at once (the crc32 instruction's latency is three times its
 * throughput), joined by shifting: one lane's register over the next lane's length. */
__attribute__((target("sse4.2"))) static inline uint32_t crc_lanes(uint32_t crc, const unsigned char **pp,
                                                                  size_t *np, size_t lane, uint32_t t[4][256]) {
    const unsigned char *p = *pp;
    size_t n = *np;
    while (n >= 3 * lane) {
        uint64_t a = crc, b = 0, c = 0;
        const unsigned char *q = p + lane, *r = p + 2 * lane;
        for (size_t i = 0; i < lane; i += 8) {
            uint64_t u, v, w;
            memcpy(&u, p + i, 8);
            memcpy(&v, q + i, 8);
            memcpy(&w, r + i, 8);
            a = _mm_crc32_u64(a, u);
            b = _mm_crc32_u64(b, v);
            c = _mm_crc32_u64(c, w);
        }
        crc = shifted(t, shifted(t, (uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
        p += 3 * lane;
        n -= 3 * lane;
    }
    *pp = p;
    *np = n;
    return crc;
}

__attribute__((target("sse4.2"))) static inline uint32_t crc_hw3(uint32_t crc, const unsigned char *p, size_t n) {
    crc = crc_lanes(crc, &p, &n, LONG_LANE, shift_long);
    crc = crc_lanes(crc, &p, &n, SHORT_LANE, shift_short);
    return crc_hw(crc, p, n);
}

#ifdef CRC32C_FOLDING
/* Folding. A 128-bit piece A of the message, loaded little-endian, holds in its low 64 bits h
 * (bit j: x^(63-j)) and in its high 64 bits l, so A = h·x^64 + l. Moving it n bits on is
 * A·x^n = h·x^(64+n) + l·x^n, and mod P each term is a 64-bit times a 32-bit polynomial: a
 * carry-less multiplication by a constant. The constant k is held as (k's reflected 32 bits) << 32
 * (bit j: x^(63-j)), so the 127-bit product of two such reflected values, read as a 128-bit piece,
 * is the product times x: hence the constants x^(n+63) for h and x^(n-1) for l. */
static inline uint64_t fold_constant(uint64_t power) { return (uint64_t)xpow(power) << 32; }

static uint64_t fold_128[2], fold_384[2], fold_256[2], fold_512[2], fold_2048[2];

static void init_fold(uint64_t k[2], uint64_t bits) {
    k[0] = fold_constant(bits + 63);
    k[1] = fold_constant(bits - 1);
}

#define CRC32C_FOLD_TARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))

CRC32C_FOLD_TARGET static inline __m128i fold16(__m128i a, const uint64_t k[2]) {
    __m128i c = _mm_set_epi64x((long long)k[1], (long long)k[0]);
    return _mm_xor_si128(_mm_clmulepi64_si128(a, c, 0x00), _mm_clmulepi64_si128(a, c, 0x11));
}

/* Four 128-bit pieces at once, each moved on by the same distance, and the piece there added. */
CRC32C_FOLD_TARGET static inline __m512i fold64(__m512i a, __m512i k, const unsigned char *next) {
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(a, k, 0x00), _mm512_clmulepi64_epi128(a, k, 0x11),
                                     _mm512_loadu_si512((const void *)next), 0x96);
}

#define FOLD_MIN 256

/* The raw register over n >= FOLD_MIN bytes: four 512-bit accumulators (256 bytes a step), joined
 * into one, its four 128-bit lanes into one, the 16-byte pieces left folded in, that piece
 * reduced by two crc32 instructions (its CRC from 0, which the folded message's is), then the
 * last bytes. The register going in is added to the first 32 bits of the message: the raw
 * register of (c, M) is that of (0, M with c added to its first four bytes). */
CRC32C_FOLD_TARGET static uint32_t crc_fold(uint32_t crc, const unsigned char *p, size_t n) {
    __m512i start = _mm512_maskz_set1_epi32(1, (int)crc);
    __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512((const void *)p), start);
    __m512i x1 = _mm512_loadu_si512((const void *)(p + 64));
    __m512i x2 = _mm512_loadu_si512((const void *)(p + 128));
    __m512i x3 = _mm512_loadu_si512((const void *)(p + 192));
    p += 256;
    n -= 256;
    __m512i k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_2048[1], (long long)fold_2048[0]));
    while (n >= 256) {
        x0 = fold64(x0, k, p);
        x1 = fold64(x1, k, p + 64);
        x2 = fold64(x2, k, p + 128);
        x3 = fold64(x3, k, p + 192);
        p += 256;
        n -= 256;
    }
    k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_512[1], (long long)fold_512[0]));
    __m512i x = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x0, k, 0x00),
                                          _mm512_clmulepi64_epi128(x0, k, 0x11), x1, 0x96);
    x = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), x2,
                                  0x96);
    x = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), x3,
                                  0x96);
    while (n >= 64) {
        x = fold64(x, k, p);
        p += 64;
        n -= 64;
    }
    __m128i a = _mm_xor_si128(_mm_xor_si128(fold16(_mm512_extracti32x4_epi32(x, 0), fold_384),
                                            fold16(_mm512_extracti32x4_epi32(x, 1), fold_256)),
                              _mm_xor_si128(fold16(_mm512_extracti32x4_epi32(x, 2), fold_128),
                                            _mm512_extracti32x4_epi32(x, 3)));
    while (n >= 16) {
        a = _mm_xor_si128(fold16(a, fold_128), _mm_loadu_si128((const __m128i *)p));
        p += 16;
        n -= 16;
    }
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(a));
    c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(a, 1));
    return crc_hw((uint32_t)c, p, n);
}

/* Whether the CPU has the instructions and the OS saves the registers (XCR0: SSE, AVX,
 * opmask and both halves of the upper ZMM state) of the folding way. */
static int fold_supported(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & bit_SSE4_2) || !(c & bit_PCLMUL) || !(c & bit_OSXSAVE)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6) != 0xE6) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & bit_AVX512F) && (b & bit_AVX512VL) && (c & bit_VPCLMULQDQ);
}
#endif
#endif

/* The raw register continued over n bytes with a given way (one the CPU can run). */
static inline uint32_t crc_raw(int method, uint32_t crc, const unsigned char *p, size_t n) {
#ifdef CRC32C_FOLDING
    if (method == CRC32C_FOLD && n >= FOLD_MIN) return crc_fold(crc, p, n);
#endif
#ifdef CRC32C_X86
    if (method >= CRC32C_LANES) return crc_hw3(crc, p, n);
    if (method == CRC32C_ONE_LANE) return crc_hw(crc, p, n);
#endif
    return crc_table(crc, p, n);
}

/* CRC-32C of n bytes continuing ``crc`` (0 to start), as google_crc32c.extend computes it. */
static inline uint32_t crc32c(uint32_t crc, const unsigned char *p, size_t n) {
    return ~crc_raw(crc32c_method, ~crc, p, n);
}

/* The way named ``name`` if this CPU can run it, else -1. */
static int crc32c_lookup(const char *name) {
    for (int m = 0; m <= crc32c_best; m++)
        if (!strcmp(name, crc32c_names[m])) return m;
    return -1;
}

static void crc32c_setup(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1u)));
        crc32c_tables[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc32c_tables[t][i] = (crc32c_tables[t - 1][i] >> 8) ^ crc32c_tables[0][crc32c_tables[t - 1][i] & 0xFF];
    crc32c_x2n[0] = 1u << 30; /* x^1 */
    for (int k = 1; k < 64; k++) crc32c_x2n[k] = multmodp(crc32c_x2n[k - 1], crc32c_x2n[k - 1]);
    crc32c_best = CRC32C_TABLE;
#ifdef CRC32C_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc32c_best = CRC32C_LANES;
        init_shift(shift_long, LONG_LANE);
        init_shift(shift_short, SHORT_LANE);
#ifdef CRC32C_FOLDING
        if (fold_supported()) {
            crc32c_best = CRC32C_FOLD;
            init_fold(fold_128, 128);
            init_fold(fold_256, 256);
            init_fold(fold_384, 384);
            init_fold(fold_512, 512);
            init_fold(fold_2048, 2048);
        }
#endif
    }
#endif
    crc32c_method = crc32c_best;
    const char *forced = getenv("GPUDOC_EVENTS_CRC");
    if (forced && crc32c_lookup(forced) >= 0) crc32c_method = crc32c_lookup(forced);
}

#endif
