/* The PostgreSQL driver's SQL scanner (pg_sql_is_script, pg_sql_is_copy,
 * pg_sql_params):
 * it steps over quotes, dollar quotes and comments of any SQL text an
 * application sends, so an unterminated one must never carry it past the
 * end of the string.
 *
 * Input: the SQL text. */
#include "../../drivers/postgres/internal.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fz_whole(data, size);
  bool script = pg_sql_is_script(s);
  bool copy = pg_sql_is_copy(s);
  /* No top-level ';' at all: one statement, whatever else it holds. */
  if (strchr(s, ';') == NULL) FZ_CHECK(!script);
  if (copy) FZ_CHECK(strcasestr(s, "copy") != NULL);
  /* A parameter count is a $ and digits somewhere in the text, and never
   * beyond the protocol's 65535. */
  int params = pg_sql_params(s);
  FZ_CHECK(params >= 0 && params <= 65535);
  if (params > 0) FZ_CHECK(strchr(s, '$') != NULL);
  free(s);
  return 0;
}
