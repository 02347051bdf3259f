/* Values in and out: parameters to libpq's arrays, results to ascope_rows.
 *
 * Parameters are bound, never spliced. Numbers, booleans and blobs go in
 * binary with their type, so nothing is formatted or parsed on the way and
 * every value arrives exactly; an integer is int4 when it fits, int8 else,
 * as PostgreSQL types a literal, so "repeat('x', $1)" and "$1 + $2" behave
 * as they would with the numbers written in. Text goes as text of unknown
 * type: the server infers it from where it is used (a date, a json...).
 *
 * Results come in text, or in binary for statements whose every column has
 * a binary form read here (PQfformat says which, per column). Types with no
 * ascope_sql counterpart (numeric, timestamps, uuid...) are their text form.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  OID_BOOL = 16,
  OID_BYTEA = 17,
  OID_CHAR = 18,
  OID_NAME = 19,
  OID_INT8 = 20,
  OID_INT2 = 21,
  OID_INT4 = 23,
  OID_TEXT = 25,
  OID_OID = 26,
  OID_JSON = 114,
  OID_FLOAT4 = 700,
  OID_FLOAT8 = 701,
  OID_UNKNOWN = 705,
  OID_BPCHAR = 1042,
  OID_VARCHAR = 1043,
};

/* ---- parameters ------------------------------------------------------------------- */

static int scratch_reserve(struct pg_conn *c, size_t n) {
  if (n <= c->pcap) return 0;
  size_t cap = c->pcap ? c->pcap : 8;
  while (cap < n) cap *= 2;
  const char **v = ascope_realloc(c->pvals, cap * sizeof *v);
  if (v) c->pvals = v;
  int *l = ascope_realloc(c->plens, cap * sizeof *l);
  if (l) c->plens = l;
  int *f = ascope_realloc(c->pfmts, cap * sizeof *f);
  if (f) c->pfmts = f;
  Oid *t = ascope_realloc(c->ptypes, cap * sizeof *t);
  if (t) c->ptypes = t;
  char *b = ascope_realloc(c->pbin, cap * 8);
  if (b) c->pbin = b;
  if (!v || !l || !f || !t || !b) return UV_ENOMEM;
  c->pcap = cap;
  return 0;
}

static void put_be(char *dst, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; i--, v >>= 8) dst[i] = (char)(v & 0xff);
}

/* Fills the connection's scratch arrays for p; the count, or a negative
 * status with a message in err. */
int pg_params_encode(struct pg_conn *c, const ascope_sql_params *p, char *err, size_t errlen) {
  size_t n = ascope_sql_params_count(p);
  if (n > 65535) {
    snprintf(err, errlen, "%zu parameters: PostgreSQL takes at most 65535", n);
    return UV_E2BIG;
  }
  if (n == 0) return 0;
  if (scratch_reserve(c, n) != 0) {
    snprintf(err, errlen, "out of memory binding parameters");
    return UV_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    char *bin = c->pbin + i * 8;
    size_t len = 0;
    const void *bytes;
    int64_t v;
    double d;
    c->pfmts[i] = 1;
    c->pvals[i] = bin;
    switch (ascope_sql_params_type(p, i)) {
    case ASCOPE_SQL_BOOL:
      c->ptypes[i] = OID_BOOL;
      bin[0] = ascope_sql_params_int64(p, i) != 0;
      c->plens[i] = 1;
      break;
    case ASCOPE_SQL_INT64:
      v = ascope_sql_params_int64(p, i);
      if (v >= INT32_MIN && v <= INT32_MAX) {
        c->ptypes[i] = OID_INT4;
        put_be(bin, (uint64_t)v, 4);
        c->plens[i] = 4;
      } else {
        c->ptypes[i] = OID_INT8;
        put_be(bin, (uint64_t)v, 8);
        c->plens[i] = 8;
      }
      break;
    case ASCOPE_SQL_DOUBLE: {
      d = ascope_sql_params_double(p, i);
      uint64_t u;
      memcpy(&u, &d, 8);
      c->ptypes[i] = OID_FLOAT8;
      put_be(bin, u, 8);
      c->plens[i] = 8;
      break;
    }
    case ASCOPE_SQL_TEXT:
      bytes = ascope_sql_params_bytes(p, i, &len);
      if (memchr(bytes, '\0', len)) {
        snprintf(err, errlen, "parameter $%zu: PostgreSQL text cannot hold a NUL byte", i + 1);
        return UV_EINVAL;
      }
      c->ptypes[i] = 0; /* unknown: the server infers it */
      c->pfmts[i] = 0;
      c->pvals[i] = bytes; /* NUL-terminated in the request's copy */
      c->plens[i] = 0;
      break;
    case ASCOPE_SQL_BLOB:
      bytes = ascope_sql_params_bytes(p, i, &len);
      if (len > INT32_MAX) {
        snprintf(err, errlen, "parameter $%zu: a blob over 2 GiB", i + 1);
        return UV_E2BIG;
      }
      c->ptypes[i] = OID_BYTEA;
      c->pvals[i] = bytes ? bytes : "";
      c->plens[i] = (int)len;
      break;
    default:
      c->ptypes[i] = 0;
      c->pvals[i] = NULL;
      c->plens[i] = 0;
      c->pfmts[i] = 0;
      break;
    }
  }
  return (int)n;
}

/* ---- types -------------------------------------------------------------------------- */

static int sql_type(Oid t) {
  switch (t) {
  case OID_BOOL:
    return ASCOPE_SQL_BOOL;
  case OID_INT2:
  case OID_INT4:
  case OID_INT8:
  case OID_OID:
    return ASCOPE_SQL_INT64;
  case OID_FLOAT4:
  case OID_FLOAT8:
    return ASCOPE_SQL_DOUBLE;
  case OID_BYTEA:
    return ASCOPE_SQL_BLOB;
  default:
    return ASCOPE_SQL_TEXT;
  }
}

static const char *type_name(Oid t) {
  static const struct {
    Oid oid;
    const char *name;
  } names[] = {
      {16, "bool"},       {17, "bytea"},      {18, "char"},        {19, "name"},
      {20, "int8"},       {21, "int2"},       {23, "int4"},        {25, "text"},
      {26, "oid"},        {114, "json"},      {142, "xml"},        {650, "cidr"},
      {700, "float4"},    {701, "float8"},    {705, "unknown"},    {790, "money"},
      {829, "macaddr"},   {869, "inet"},      {1042, "bpchar"},    {1043, "varchar"},
      {1082, "date"},     {1083, "time"},     {1114, "timestamp"}, {1184, "timestamptz"},
      {1186, "interval"}, {1266, "timetz"},   {1560, "bit"},       {1562, "varbit"},
      {1700, "numeric"},  {2950, "uuid"},     {3802, "jsonb"},     {1000, "bool[]"},
      {1005, "int2[]"},   {1007, "int4[]"},   {1016, "int8[]"},    {1009, "text[]"},
      {1021, "float4[]"}, {1022, "float8[]"},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].oid == t) return names[i].name;
  return NULL;
}

bool pg_types_binary(const PGresult *res) {
  int n = PQnfields(res);
  for (int i = 0; i < n; i++) {
    switch (PQftype(res, i)) {
    case OID_BOOL:
    case OID_BYTEA:
    case OID_CHAR:
    case OID_NAME:
    case OID_INT8:
    case OID_INT2:
    case OID_INT4:
    case OID_TEXT:
    case OID_OID:
    case OID_JSON:
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_UNKNOWN:
    case OID_BPCHAR:
    case OID_VARCHAR:
      break;
    default:
      return false;
    }
  }
  return true;
}

int pg_rows_describe(ascope_rows *rows, const PGresult *res) {
  int n = PQnfields(res);
  int rc = ascope_rows_set_columns(rows, (size_t)n);
  for (int i = 0; rc == 0 && i < n; i++) {
    Oid t = PQftype(res, i);
    rc = ascope_rows_set_column(rows, (size_t)i, PQfname(res, i), type_name(t), sql_type(t));
  }
  return rc;
}

/* ---- values --------------------------------------------------------------------------- */

static uint64_t get_be(const char *p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v = v << 8 | (unsigned char)p[i];
  return v;
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* bytea's text form: "\x" and hex (the default), or the old escape form. */
static int put_bytea_text(ascope_rows *rows, size_t col, const char *s, size_t len) {
  if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
    size_t n = (len - 2) / 2;
    if (n == 0) return ascope_rows_put_blob(rows, col, "", 0);
    char small[256], *buf = n <= sizeof small ? small : ascope_malloc(n);
    if (buf == NULL) return UV_ENOMEM;
    for (size_t i = 0; i < n; i++) {
      int hi = hexval(s[2 + 2 * i]), lo = hexval(s[3 + 2 * i]);
      buf[i] = (char)((hi < 0 ? 0 : hi) << 4 | (lo < 0 ? 0 : lo));
    }
    int rc = ascope_rows_put_blob(rows, col, buf, n);
    if (buf != small) ascope_free(buf);
    return rc;
  }
  size_t n;
  unsigned char *u = PQunescapeBytea((const unsigned char *)s, &n);
  if (u == NULL) return UV_ENOMEM;
  int rc = ascope_rows_put_blob(rows, col, u, n);
  PQfreemem(u);
  return rc;
}

static int put_text_value(ascope_rows *rows, size_t col, Oid t, const char *s, size_t len) {
  switch (t) {
  case OID_BOOL:
    ascope_rows_put_bool(rows, col, s[0] == 't');
    return 0;
  case OID_INT2:
  case OID_INT4:
  case OID_INT8:
    ascope_rows_put_int64(rows, col, strtoll(s, NULL, 10));
    return 0;
  case OID_OID:
    ascope_rows_put_int64(rows, col, (int64_t)strtoull(s, NULL, 10));
    return 0;
  case OID_FLOAT4:
  case OID_FLOAT8:
    ascope_rows_put_double(rows, col, strtod(s, NULL)); /* "NaN", "Infinity" too */
    return 0;
  case OID_BYTEA:
    return put_bytea_text(rows, col, s, len);
  default:
    return ascope_rows_put_text(rows, col, s, len);
  }
}

static int put_binary_value(ascope_rows *rows, size_t col, Oid t, const char *p, size_t len) {
  uint64_t u;
  switch (t) {
  case OID_BOOL:
    if (len != 1) break;
    ascope_rows_put_bool(rows, col, p[0] != 0);
    return 0;
  case OID_INT2:
    if (len != 2) break;
    ascope_rows_put_int64(rows, col, (int16_t)get_be(p, 2));
    return 0;
  case OID_INT4:
    if (len != 4) break;
    ascope_rows_put_int64(rows, col, (int32_t)get_be(p, 4));
    return 0;
  case OID_OID:
    if (len != 4) break;
    ascope_rows_put_int64(rows, col, (int64_t)get_be(p, 4));
    return 0;
  case OID_INT8:
    if (len != 8) break;
    ascope_rows_put_int64(rows, col, (int64_t)get_be(p, 8));
    return 0;
  case OID_FLOAT4: {
    if (len != 4) break;
    uint32_t b = (uint32_t)get_be(p, 4);
    float f;
    memcpy(&f, &b, 4);
    ascope_rows_put_double(rows, col, f);
    return 0;
  }
  case OID_FLOAT8: {
    if (len != 8) break;
    u = get_be(p, 8);
    double d;
    memcpy(&d, &u, 8);
    ascope_rows_put_double(rows, col, d);
    return 0;
  }
  case OID_BYTEA:
    return ascope_rows_put_blob(rows, col, p, len);
  default:
    return ascope_rows_put_text(rows, col, p, len); /* the text types: their bytes */
  }
  return ascope_rows_put_blob(rows, col, p, len); /* an unexpected size: the raw bytes */
}

int pg_rows_append(ascope_rows *rows, const PGresult *res, bool binary) {
  (void)binary; /* PQfformat says it per column */
  int nrows = PQntuples(res), ncols = PQnfields(res);
  for (int r = 0; r < nrows; r++) {
    int rc = ascope_rows_add_row(rows);
    for (int i = 0; rc == 0 && i < ncols; i++) {
      if (PQgetisnull(res, r, i)) continue; /* the row starts with every column NULL */
      const char *v = PQgetvalue(res, r, i);
      size_t len = (size_t)PQgetlength(res, r, i);
      Oid t = PQftype(res, i);
      rc = PQfformat(res, i) ? put_binary_value(rows, (size_t)i, t, v, len)
                             : put_text_value(rows, (size_t)i, t, v, len);
    }
    if (rc) return rc;
  }
  return 0;
}
