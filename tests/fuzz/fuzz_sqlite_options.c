/* The SQLite driver's options string (sq_options_parse) and its
 * transaction use's options (sq_tx_options_parse).
 *
 * Input: the options string. */
#include "../../drivers/sqlite/internal.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fz_whole(data, size);
  struct sq_options o;
  char err[160];
  if (sq_options_parse(&o, s, err, sizeof err) == 0) {
    FZ_CHECK(o.mode >= MODE_RWC && o.mode <= MODE_MEMORY);
    FZ_CHECK(o.foreign_keys >= -1 && o.foreign_keys <= 1);
    FZ_CHECK(o.synchronous >= -1 && o.synchronous <= 2);
    FZ_CHECK(o.busy_ms <= 86400000 && o.cache <= 100000);
    FZ_CHECK(o.batch > 0 && o.batch <= 1000000);
  } else {
    FZ_CHECK(memchr(err, '\0', sizeof err) != NULL && strncmp(err, "bad sqlite option", 17) == 0);
  }
  enum sq_begin b = (enum sq_begin)99;
  if (sq_tx_options_parse(s, &b) == 0) FZ_CHECK(b >= BEGIN_DEFERRED && b <= BEGIN_EXCLUSIVE);
  free(s);
  return 0;
}
