/* The PostgreSQL driver's options string (pg_options_parse) and the
 * transaction use's options (pg_tx_begin_sql), which become SQL text.
 *
 * Input: one byte choosing the size of the BEGIN buffer, then the options
 * string. The BEGIN statement must be built from fixed words only: no byte
 * of the options may reach the SQL. */
#include "../../drivers/postgres/internal.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  size_t cap = 1 + fz_byte(&f) % 96;
  char *s = fz_str(&f, NULL);

  struct pg_options o;
  char err[160];
  err[0] = '\0';
  if (pg_options_parse(&o, s, err, sizeof err) == 0) {
    FZ_CHECK(o.cancel_ms > 0 && o.cancel_ms <= 86400000);
    FZ_CHECK(o.connect_ms <= 86400000);
    FZ_CHECK(o.batch > 0 && o.batch <= 1000000);
    FZ_CHECK(o.cache <= 100000);
  } else {
    FZ_CHECK(memchr(err, '\0', sizeof err) != NULL && strncmp(err, "bad postgres option", 19) == 0);
  }

  char *out = fz_xmalloc(cap);
  if (pg_tx_begin_sql(s, out, cap) == 0) {
    FZ_CHECK(strlen(out) < cap);
    FZ_CHECK(strncmp(out, "BEGIN", cap - 1 < 5 ? cap - 1 : 5) == 0);
    FZ_CHECK(strspn(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZ ") == strlen(out));
  }
  free(out);
  free(s);
  return 0;
}
