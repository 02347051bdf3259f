/* Bound parameters.
 *
 * A set is an array of typed values plus one byte arena for text and blobs,
 * so copying it into a request is two memcpy calls and the request owns
 * everything it binds: the caller may free or reuse its set the moment a
 * statement has started. Values are never turned into SQL text. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

ascope_sql_params *ascope_sql_params_new(void) {
  return ascope_calloc(1, sizeof(ascope_sql_params));
}

void ascope_sql_params_free(ascope_sql_params *p) {
  if (p == NULL || p->flat) return;
  ascope_free(p->vals);
  ascope_free(p->arena);
  ascope_free(p);
}

void ascope_sql_params_clear(ascope_sql_params *p) {
  if (p == NULL || p->flat) return;
  p->n = 0;
  p->used = 0;
  p->err = 0;
}

/* Reserves one value slot; the caller fills it. NULL: out of memory, and
 * the set remembers it. */
static struct pval *slot(ascope_sql_params *p) {
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 8;
    struct pval *v = ascope_realloc(p->vals, cap * sizeof *v);
    if (v == NULL) {
      p->err = UV_ENOMEM;
      return NULL;
    }
    p->vals = v;
    p->cap = cap;
  }
  struct pval *v = &p->vals[p->n++];
  memset(v, 0, sizeof *v);
  return v;
}

/* Copies len bytes plus a NUL into the arena; returns the offset. */
static int arena_put(ascope_sql_params *p, const void *data, size_t len, size_t *off) {
  if (len >= SIZE_MAX / 2 - p->used) return UV_E2BIG;
  size_t need = p->used + len + 1;
  if (need > p->arena_cap) {
    size_t cap = p->arena_cap ? p->arena_cap : 256;
    while (cap < need) cap *= 2;
    char *a = ascope_realloc(p->arena, cap);
    if (a == NULL) return UV_ENOMEM;
    p->arena = a;
    p->arena_cap = cap;
  }
  if (len) memcpy(p->arena + p->used, data, len);
  p->arena[p->used + len] = '\0';
  *off = p->used;
  p->used = need;
  return 0;
}

static int add_scalar(ascope_sql_params *p, int type, int64_t i, double d) {
  if (p == NULL || p->flat) return UV_EINVAL;
  struct pval *v = slot(p);
  if (v == NULL) return UV_ENOMEM;
  v->type = type;
  if (type == ASCOPE_SQL_DOUBLE)
    v->v.d = d;
  else
    v->v.i = i;
  return 0;
}

int ascope_sql_params_add_null(ascope_sql_params *p) {
  return add_scalar(p, ASCOPE_SQL_NULL, 0, 0);
}

int ascope_sql_params_add_bool(ascope_sql_params *p, int value) {
  return add_scalar(p, ASCOPE_SQL_BOOL, value != 0, 0);
}

int ascope_sql_params_add_int64(ascope_sql_params *p, int64_t value) {
  return add_scalar(p, ASCOPE_SQL_INT64, value, 0);
}

int ascope_sql_params_add_double(ascope_sql_params *p, double value) {
  return add_scalar(p, ASCOPE_SQL_DOUBLE, 0, value);
}

static int add_bytes(ascope_sql_params *p, int type, const void *data, size_t len) {
  if (p == NULL || p->flat || (data == NULL && len)) return UV_EINVAL;
  size_t off;
  int rc = arena_put(p, data, len, &off);
  if (rc) {
    p->err = rc;
    return rc;
  }
  struct pval *v = slot(p);
  if (v == NULL) return UV_ENOMEM;
  v->type = type;
  v->len = len;
  v->v.off = off;
  return 0;
}

int ascope_sql_params_add_text(ascope_sql_params *p, const char *text, size_t len) {
  if (text == NULL) return ascope_sql_params_add_null(p);
  if (len == ASCOPE_SQL_NTS) len = strlen(text);
  return add_bytes(p, ASCOPE_SQL_TEXT, text, len);
}

int ascope_sql_params_add_blob(ascope_sql_params *p, const void *data, size_t len) {
  if (data == NULL && len == 0) data = "";
  return add_bytes(p, ASCOPE_SQL_BLOB, data, len);
}

/* ---- the FFI form ---------------------------------------------------------- */

/* Numbers arrive as text; parse them strictly: the whole value, no blanks,
 * no overflow. A short copy makes the text NUL-terminated; a NUL inside the
 * given length would end it early and pass "12\0junk" off as 12. */
static int parse_number(int type, const char *s, size_t len, int64_t *i, double *d) {
  char buf[64];
  if (len == 0 || len >= sizeof buf || memchr(s, '\0', len)) return UV_EINVAL;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (type == ASCOPE_SQL_BOOL) {
    static const char *yes[] = {"t", "true", "1"}, *no[] = {"f", "false", "0"};
    for (int k = 0; k < 3; k++) {
      if (strcasecmp(buf, yes[k]) == 0 || strcasecmp(buf, no[k]) == 0) {
        *i = strcasecmp(buf, yes[k]) == 0;
        return 0;
      }
    }
    return UV_EINVAL;
  }
  if (buf[0] == ' ' || buf[0] == '\t' || buf[0] == '\n') return UV_EINVAL;
  char *end;
  errno = 0;
  if (type == ASCOPE_SQL_INT64)
    *i = strtoll(buf, &end, 10);
  else
    *d = strtod(buf, &end);
  return errno || *end ? UV_EINVAL : 0;
}

static int add_one(ascope_sql_params *p, int type, const char *value, size_t len) {
  if (value == NULL) return ascope_sql_params_add_null(p);
  if (len == ASCOPE_SQL_NTS) len = strlen(value);
  int64_t i = 0;
  double d = 0;
  switch (type) {
  case ASCOPE_SQL_NULL:
    return ascope_sql_params_add_null(p);
  case ASCOPE_SQL_TEXT:
    return ascope_sql_params_add_text(p, value, len);
  case ASCOPE_SQL_BLOB:
    return ascope_sql_params_add_blob(p, value, len);
  case ASCOPE_SQL_BOOL:
  case ASCOPE_SQL_INT64:
  case ASCOPE_SQL_DOUBLE: {
    int rc = parse_number(type, value, len, &i, &d);
    return rc ? rc : add_scalar(p, type, i, d);
  }
  default:
    return UV_EINVAL;
  }
}

int ascope_sql_params_add_array(ascope_sql_params *p, size_t n, const int *types,
                                const char *const *values, const size_t *lengths) {
  if (p == NULL || p->flat || (n && (types == NULL || values == NULL))) return UV_EINVAL;
  size_t n0 = p->n, used0 = p->used;
  int err0 = p->err;
  for (size_t k = 0; k < n; k++) {
    int rc = add_one(p, types[k], values[k], lengths ? lengths[k] : ASCOPE_SQL_NTS);
    if (rc) { /* all or nothing */
      p->n = n0;
      p->used = used0;
      p->err = err0;
      return rc;
    }
  }
  return 0;
}

/* ---- reading ----------------------------------------------------------------- */

static const struct pval *at(const ascope_sql_params *p, size_t i) {
  return p && i < p->n ? &p->vals[i] : NULL;
}

size_t ascope_sql_params_count(const ascope_sql_params *p) {
  return p ? p->n : 0;
}

int ascope_sql_params_type(const ascope_sql_params *p, size_t i) {
  const struct pval *v = at(p, i);
  return v ? v->type : UV_EINVAL;
}

int64_t ascope_sql_params_int64(const ascope_sql_params *p, size_t i) {
  const struct pval *v = at(p, i);
  if (v == NULL) return 0;
  if (v->type == ASCOPE_SQL_INT64 || v->type == ASCOPE_SQL_BOOL) return v->v.i;
  if (v->type == ASCOPE_SQL_DOUBLE) return (int64_t)v->v.d;
  return 0;
}

double ascope_sql_params_double(const ascope_sql_params *p, size_t i) {
  const struct pval *v = at(p, i);
  if (v == NULL) return 0;
  if (v->type == ASCOPE_SQL_DOUBLE) return v->v.d;
  if (v->type == ASCOPE_SQL_INT64 || v->type == ASCOPE_SQL_BOOL) return (double)v->v.i;
  return 0;
}

const void *ascope_sql_params_bytes(const ascope_sql_params *p, size_t i, size_t *len) {
  const struct pval *v = at(p, i);
  if (len) *len = 0;
  if (v == NULL || (v->type != ASCOPE_SQL_TEXT && v->type != ASCOPE_SQL_BLOB)) return NULL;
  if (len) *len = v->len;
  return p->arena + v->v.off;
}

/* ---- the request's copy ------------------------------------------------------- */

/* A run of a set's values, [first, first + n), packed for a request: the
 * values, then only the bytes they use, so that cutting a large set into
 * many requests (ascope_sql_exec_many) copies each byte once. */
size_t params_flat_size_range(const ascope_sql_params *p, size_t first, size_t n) {
  size_t bytes = n * sizeof(struct pval);
  for (size_t i = first; i < first + n; i++)
    if (p->vals[i].type == ASCOPE_SQL_TEXT || p->vals[i].type == ASCOPE_SQL_BLOB)
      bytes += p->vals[i].len + 1;
  return n ? bytes : 0;
}

void params_flatten_range(ascope_sql_params *dst, const ascope_sql_params *p, size_t first,
                          size_t n, void *mem) {
  memset(dst, 0, sizeof *dst);
  dst->flat = true;
  if (n == 0) return;
  dst->vals = mem;
  dst->arena = (char *)mem + n * sizeof(struct pval);
  for (size_t i = 0; i < n; i++) {
    struct pval v = p->vals[first + i];
    if (v.type == ASCOPE_SQL_TEXT || v.type == ASCOPE_SQL_BLOB) {
      memcpy(dst->arena + dst->used, p->arena + v.v.off, v.len + 1);
      v.v.off = dst->used;
      dst->used += v.len + 1;
    }
    dst->vals[i] = v;
  }
  dst->n = dst->cap = n;
  dst->arena_cap = dst->used;
}
