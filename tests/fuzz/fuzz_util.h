/* Helpers shared by the fuzz targets.
 *
 * A target that needs several strings reads them from its one input as
 * NUL-separated fields: a C string cannot hold a NUL, so no input a caller
 * could pass is out of reach, and the seed files stay readable. Every field
 * is copied into a heap block of exactly its size, so that AddressSanitizer
 * sees a read one byte past the end; libFuzzer's own buffer is larger than
 * the input and would hide it. */
#ifndef ASCOPE_FUZZ_UTIL_H
#define ASCOPE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fz {
  const uint8_t *p;
  size_t n;
};

/* A failed invariant: abort() makes libFuzzer save the input as a crash. */
#define FZ_CHECK(cond)                                                                             \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                 \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/* Reads whose result nothing needs (a strlen that only has to be safe)
 * are added here, so the compiler cannot drop them. */
static volatile size_t fz_sink;

static inline void *fz_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) abort();
  return p;
}

/* The next byte, or 0 once the input is used up. */
static inline uint8_t fz_byte(struct fz *f) {
  if (f->n == 0) return 0;
  f->n--;
  return *f->p++;
}

/* The bytes up to the next NUL (or the end), as a NUL-terminated copy of
 * exactly that many bytes plus one; *len gets its length when not NULL. */
static inline char *fz_str(struct fz *f, size_t *len) {
  const uint8_t *z = f->n ? memchr(f->p, 0, f->n) : NULL;
  size_t k = z ? (size_t)(z - f->p) : f->n;
  char *s = fz_xmalloc(k + 1);
  if (k) memcpy(s, f->p, k);
  s[k] = '\0';
  f->p += k + (z != NULL);
  f->n -= k + (z != NULL);
  if (len) *len = k;
  return s;
}

/* The same bytes without the terminating NUL: for functions that take a
 * length and must not read past it. */
static inline char *fz_bytes(struct fz *f, size_t *len) {
  const uint8_t *z = f->n ? memchr(f->p, 0, f->n) : NULL;
  size_t k = z ? (size_t)(z - f->p) : f->n;
  char *s = fz_xmalloc(k);
  if (k) memcpy(s, f->p, k);
  f->p += k + (z != NULL);
  f->n -= k + (z != NULL);
  *len = k;
  return s;
}

/* The next n bytes (fewer at the end), NULs and all, in a block of exactly
 * that size. */
static inline char *fz_take(struct fz *f, size_t n, size_t *len) {
  if (n > f->n) n = f->n;
  char *s = fz_xmalloc(n);
  if (n) memcpy(s, f->p, n);
  f->p += n;
  f->n -= n;
  *len = n;
  return s;
}

/* The whole input as one NUL-terminated string (cut at an inner NUL). */
static inline char *fz_whole(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  return fz_str(&f, NULL);
}

#endif
