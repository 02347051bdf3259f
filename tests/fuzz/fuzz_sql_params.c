/* ascope_sql_params_add_array: the FFI form of the SQL parameters, values
 * given as bytes with a type, numbers and booleans parsed strictly from
 * text, all or nothing. Then the request's flat copy of the set.
 *
 * Input: one byte of flags, then per value a type byte, a byte of value
 * flags (SQL NULL; NUL-terminated or with a length) and the value: its
 * bytes up to a NUL, or with a length, a byte giving it and that many bytes
 * (NULs included). A value with a length is handed over without a
 * terminating NUL, so reading past the length is caught. */
#include "../../drivers/sql/internal.h"

#include <errno.h>
#include <math.h>
#include <strings.h>

#include "fuzz_util.h"

#define MAXV 64

/* The strict reading sql.h promises, spelled out again. */
static bool strict_number(int type, const char *s, size_t len) {
  if (len == 0 || len >= 64 || memchr(s, '\0', len) || strchr(" \t\n", s[0])) return false;
  char buf[64];
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (type == ASCOPE_SQL_BOOL) {
    static const char *const words[] = {"t", "true", "1", "f", "false", "0"};
    for (int k = 0; k < 6; k++)
      if (strcasecmp(buf, words[k]) == 0) return true;
    return false;
  }
  char *end;
  errno = 0;
  if (type == ASCOPE_SQL_INT64)
    (void)strtoll(buf, &end, 10);
  else
    (void)strtod(buf, &end);
  return errno == 0 && *end == '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  uint8_t flags = fz_byte(&f);
  int types[MAXV];
  char *values[MAXV];
  size_t lengths[MAXV], n = 0;
  bool with_lengths = flags & 1;
  while (f.n && n < MAXV) {
    types[n] = (int)(fz_byte(&f) % 8) - 1; /* -1 and 6 are not types */
    uint8_t vf = fz_byte(&f);
    if (vf & 1) {
      values[n] = NULL;
      lengths[n] = 0;
      free(fz_str(&f, NULL));
    } else if (with_lengths && !(vf & 2)) {
      values[n] = fz_take(&f, fz_byte(&f), &lengths[n]);
    } else {
      values[n] = fz_str(&f, &lengths[n]);
      if (with_lengths) lengths[n] = ASCOPE_SQL_NTS;
    }
    n++;
  }

  ascope_sql_params *p = ascope_sql_params_new();
  FZ_CHECK(p != NULL);
  /* Values already in the set must come through a failed add untouched. */
  size_t pre = flags & 2 ? 2 : 0;
  if (pre) {
    FZ_CHECK(ascope_sql_params_add_int64(p, -7) == 0);
    FZ_CHECK(ascope_sql_params_add_text(p, "kept", ASCOPE_SQL_NTS) == 0);
  }
  int rc = ascope_sql_params_add_array(p, n, types, (const char *const *)values,
                                       with_lengths ? lengths : NULL);
  bool expect = true; /* a NULL value is SQL NULL whatever its type */
  for (size_t k = 0; k < n; k++) {
    if (values[k] == NULL) continue;
    size_t len = with_lengths && lengths[k] != ASCOPE_SQL_NTS ? lengths[k] : strlen(values[k]);
    if (types[k] == ASCOPE_SQL_BOOL || types[k] == ASCOPE_SQL_INT64 ||
        types[k] == ASCOPE_SQL_DOUBLE)
      expect = expect && strict_number(types[k], values[k], len);
    else if (types[k] < ASCOPE_SQL_NULL || types[k] > ASCOPE_SQL_BLOB)
      expect = false;
  }
  FZ_CHECK((rc == 0) == expect);
  FZ_CHECK(ascope_sql_params_count(p) == pre + (rc == 0 ? n : 0));
  if (pre) {
    FZ_CHECK(ascope_sql_params_int64(p, 0) == -7);
    size_t len;
    const char *kept = ascope_sql_params_bytes(p, 1, &len);
    FZ_CHECK(kept && len == 4 && memcmp(kept, "kept", 5) == 0);
  }

  /* The request's copy reads the same as the set. */
  size_t flat_size = params_flat_size_range(p, 0, ascope_sql_params_count(p));
  void *mem = fz_xmalloc(flat_size);
  ascope_sql_params flat;
  params_flatten_range(&flat, p, 0, ascope_sql_params_count(p), mem);
  FZ_CHECK(ascope_sql_params_count(&flat) == ascope_sql_params_count(p));
  FZ_CHECK(ascope_sql_params_add_null(&flat) == UV_EINVAL); /* a copy is read-only */

  for (size_t k = 0; rc == 0 && k < n; k++) {
    size_t i = pre + k, len;
    int t = ascope_sql_params_type(p, i);
    FZ_CHECK(t == ascope_sql_params_type(&flat, i));
    if (values[k] == NULL || types[k] == ASCOPE_SQL_NULL) {
      FZ_CHECK(t == ASCOPE_SQL_NULL);
      continue;
    }
    FZ_CHECK(t == types[k]);
    if (t == ASCOPE_SQL_TEXT || t == ASCOPE_SQL_BLOB) {
      size_t want = with_lengths && lengths[k] != ASCOPE_SQL_NTS ? lengths[k] : strlen(values[k]);
      const char *b = ascope_sql_params_bytes(p, i, &len);
      FZ_CHECK(b && len == want && memcmp(b, values[k], len) == 0 && b[len] == '\0');
      const char *c = ascope_sql_params_bytes(&flat, i, &len);
      FZ_CHECK(c && len == want && memcmp(c, values[k], len) == 0);
    } else if (t == ASCOPE_SQL_DOUBLE) {
      double a = ascope_sql_params_double(p, i), b = ascope_sql_params_double(&flat, i);
      FZ_CHECK(a == b || (isnan(a) && isnan(b)));
    } else {
      int64_t a = ascope_sql_params_int64(p, i);
      FZ_CHECK(a == ascope_sql_params_int64(&flat, i));
      if (t == ASCOPE_SQL_BOOL) FZ_CHECK(a == 0 || a == 1);
    }
  }
  free(mem);
  ascope_sql_params_free(p);
  for (size_t k = 0; k < n; k++) free(values[k]);
  return 0;
}
