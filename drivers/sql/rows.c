/* Results: rows of typed values, read through functions.
 *
 * A driver copies what the database returns into one of these, on whichever
 * thread runs the statement: an array of fixed-size values and one byte
 * arena for text and blobs. Copying is what lets a SQLite statement move on
 * (its column pointers die at the next step) and a PostgreSQL result be
 * cleared, while the user reads the rows later on the loop thread. A stream
 * reuses one object for every batch, so its memory is that of one batch. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void rows_init(ascope_rows *r) {
  memset(r, 0, sizeof *r);
}

void rows_fini(ascope_rows *r) {
  ascope_free(r->cols);
  ascope_free(r->colbuf);
  ascope_free(r->vals);
  ascope_free(r->arena);
  rows_init(r);
}

/* Grows *buf to hold need bytes, doubling. */
static int grow(void **buf, size_t *cap, size_t need, size_t first) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : first;
  while (c < need) {
    if (c > SIZE_MAX / 2) return UV_ENOMEM;
    c *= 2;
  }
  void *p = ascope_realloc(*buf, c);
  if (p == NULL) return UV_ENOMEM;
  *buf = p;
  *cap = c;
  return 0;
}

/* ---- building -------------------------------------------------------------- */

int ascope_rows_set_columns(ascope_rows *r, size_t n) {
  if (r == NULL) return UV_EINVAL;
  ascope_rows_clear(r);
  r->colbuf_len = 0;
  struct rcol *c = n ? ascope_realloc(r->cols, n * sizeof *c) : r->cols;
  if (n && c == NULL) return UV_ENOMEM;
  r->cols = c;
  for (size_t i = 0; i < n; i++) c[i] = (struct rcol){SIZE_MAX, SIZE_MAX, ASCOPE_SQL_NULL};
  r->ncols = n;
  return 0;
}

static int colbuf_put(ascope_rows *r, const char *s, size_t *off) {
  size_t n = strlen(s) + 1;
  int rc = grow((void **)&r->colbuf, &r->colbuf_cap, r->colbuf_len + n, 128);
  if (rc) return rc;
  memcpy(r->colbuf + r->colbuf_len, s, n);
  *off = r->colbuf_len;
  r->colbuf_len += n;
  return 0;
}

int ascope_rows_set_column(ascope_rows *r, size_t col, const char *name, const char *decl,
                           int type) {
  if (r == NULL || col >= r->ncols) return UV_EINVAL;
  struct rcol *c = &r->cols[col];
  c->type = type;
  int rc = colbuf_put(r, name ? name : "", &c->name);
  if (rc == 0 && decl) rc = colbuf_put(r, decl, &c->decl);
  return rc;
}

int ascope_rows_add_row(ascope_rows *r) {
  if (r == NULL) return UV_EINVAL;
  size_t need = (r->nrows + 1) * r->ncols * sizeof(struct rval);
  int rc = grow((void **)&r->vals, &r->vals_cap, need, 16 * sizeof(struct rval));
  if (rc) return rc;
  struct rval *row = r->vals + r->nrows * r->ncols;
  memset(row, 0, r->ncols * sizeof *row); /* ASCOPE_SQL_NULL is 0 */
  r->nrows++;
  return 0;
}

/* The current row's value at col; NULL when there is none. */
static struct rval *cur(ascope_rows *r, size_t col) {
  if (r == NULL || r->nrows == 0 || col >= r->ncols) return NULL;
  return &r->vals[(r->nrows - 1) * r->ncols + col];
}

void ascope_rows_put_null(ascope_rows *r, size_t col) {
  struct rval *v = cur(r, col);
  if (v) v->type = ASCOPE_SQL_NULL;
}

void ascope_rows_put_bool(ascope_rows *r, size_t col, int value) {
  struct rval *v = cur(r, col);
  if (v == NULL) return;
  v->type = ASCOPE_SQL_BOOL;
  v->v.i = value != 0;
}

void ascope_rows_put_int64(ascope_rows *r, size_t col, int64_t value) {
  struct rval *v = cur(r, col);
  if (v == NULL) return;
  v->type = ASCOPE_SQL_INT64;
  v->v.i = value;
}

void ascope_rows_put_double(ascope_rows *r, size_t col, double value) {
  struct rval *v = cur(r, col);
  if (v == NULL) return;
  v->type = ASCOPE_SQL_DOUBLE;
  v->v.d = value;
}

static int put_bytes(ascope_rows *r, size_t col, int type, const void *data, size_t len) {
  struct rval *v = cur(r, col);
  if (v == NULL) return UV_EINVAL;
  if (len > UINT32_MAX - 1) return UV_E2BIG;
  int rc = grow((void **)&r->arena, &r->arena_cap, r->arena_len + len + 1, 1024);
  if (rc) return rc;
  if (len) memcpy(r->arena + r->arena_len, data, len);
  r->arena[r->arena_len + len] = '\0';
  v->type = (uint8_t)type;
  v->len = (uint32_t)len;
  v->v.off = r->arena_len;
  r->arena_len += len + 1;
  return 0;
}

int ascope_rows_put_text(ascope_rows *r, size_t col, const char *text, size_t len) {
  if (text == NULL) {
    ascope_rows_put_null(r, col);
    return 0;
  }
  if (len == ASCOPE_SQL_NTS) len = strlen(text);
  return put_bytes(r, col, ASCOPE_SQL_TEXT, text, len);
}

int ascope_rows_put_blob(ascope_rows *r, size_t col, const void *data, size_t len) {
  if (data == NULL && len) return UV_EINVAL;
  return put_bytes(r, col, ASCOPE_SQL_BLOB, data, len);
}

void ascope_rows_set_changes(ascope_rows *r, int64_t changes, int64_t last_id) {
  if (r == NULL) return;
  r->changes = changes;
  r->last_id = last_id;
}

void ascope_rows_clear(ascope_rows *r) {
  if (r == NULL) return;
  r->nrows = 0;
  r->arena_len = 0;
  r->changes = r->last_id = 0;
}

/* ---- reading ----------------------------------------------------------------- */

static const struct rval *val(const ascope_rows *r, size_t row, size_t col) {
  if (r == NULL || row >= r->nrows || col >= r->ncols) return NULL;
  return &r->vals[row * r->ncols + col];
}

size_t ascope_rows_count(const ascope_rows *r) {
  return r ? r->nrows : 0;
}

size_t ascope_rows_columns(const ascope_rows *r) {
  return r ? r->ncols : 0;
}

const char *ascope_rows_column_name(const ascope_rows *r, size_t col) {
  if (r == NULL || col >= r->ncols || r->cols[col].name == SIZE_MAX) return NULL;
  return r->colbuf + r->cols[col].name;
}

const char *ascope_rows_column_decltype(const ascope_rows *r, size_t col) {
  if (r == NULL || col >= r->ncols || r->cols[col].decl == SIZE_MAX) return NULL;
  return r->colbuf + r->cols[col].decl;
}

int ascope_rows_column_type(const ascope_rows *r, size_t col) {
  if (r == NULL || col >= r->ncols) return ASCOPE_SQL_NULL;
  if (r->cols[col].type != ASCOPE_SQL_NULL) return r->cols[col].type;
  for (size_t i = 0; i < r->nrows; i++) {
    int t = val(r, i, col)->type;
    if (t != ASCOPE_SQL_NULL) return t;
  }
  return ASCOPE_SQL_NULL;
}

int ascope_rows_type(const ascope_rows *r, size_t row, size_t col) {
  const struct rval *v = val(r, row, col);
  return v ? v->type : ASCOPE_SQL_NULL;
}

int ascope_rows_is_null(const ascope_rows *r, size_t row, size_t col) {
  const struct rval *v = val(r, row, col);
  return v == NULL || v->type == ASCOPE_SQL_NULL;
}

int64_t ascope_rows_int64(const ascope_rows *r, size_t row, size_t col) {
  const struct rval *v = val(r, row, col);
  if (v == NULL) return 0;
  switch (v->type) {
  case ASCOPE_SQL_BOOL:
  case ASCOPE_SQL_INT64:
    return v->v.i;
  case ASCOPE_SQL_DOUBLE: /* saturate: a cast out of range is undefined */
    if (v->v.d != v->v.d) return 0;
    if (v->v.d >= 9223372036854775807.0) return INT64_MAX;
    if (v->v.d <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v->v.d;
  default:
    return 0;
  }
}

double ascope_rows_double(const ascope_rows *r, size_t row, size_t col) {
  const struct rval *v = val(r, row, col);
  if (v == NULL) return 0;
  if (v->type == ASCOPE_SQL_DOUBLE) return v->v.d;
  if (v->type == ASCOPE_SQL_INT64 || v->type == ASCOPE_SQL_BOOL) return (double)v->v.i;
  return 0;
}

static const char *bytes(const ascope_rows *r, size_t row, size_t col, size_t *len) {
  const struct rval *v = val(r, row, col);
  if (len) *len = 0;
  if (v == NULL || (v->type != ASCOPE_SQL_TEXT && v->type != ASCOPE_SQL_BLOB)) return NULL;
  if (len) *len = v->len;
  return r->arena + v->v.off;
}

const char *ascope_rows_text(const ascope_rows *r, size_t row, size_t col, size_t *len) {
  return bytes(r, row, col, len);
}

const void *ascope_rows_blob(const ascope_rows *r, size_t row, size_t col, size_t *len) {
  return bytes(r, row, col, len);
}

int64_t ascope_rows_changes(const ascope_rows *r) {
  return r ? r->changes : 0;
}

int64_t ascope_rows_last_id(const ascope_rows *r) {
  return r ? r->last_id : 0;
}

size_t ascope_rows_memory(const ascope_rows *r) {
  if (r == NULL) return 0;
  return r->nrows * r->ncols * sizeof(struct rval) + r->arena_len + r->colbuf_len +
         r->ncols * sizeof(struct rcol);
}
