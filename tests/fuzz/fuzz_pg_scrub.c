/* Keeping the password out of the PostgreSQL driver's messages: pg_scrub
 * (masks the password, "password=..." and "scheme://user:password@") and
 * pg_dsn_secret_guess (the password of a DSN libpq could not parse).
 *
 * Input: the message, a NUL, the password, a NUL, a DSN. */
#include "../../drivers/postgres/internal.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  char *msg = fz_str(&f, NULL);
  char *secret = fz_str(&f, NULL);
  char *dsn = fz_str(&f, NULL);

  char *m = pg_scrub(msg, secret);
  FZ_CHECK(m != NULL);
  /* Masking writes '*' only, so a password without one cannot survive. */
  if (*secret && strchr(secret, '*') == NULL) FZ_CHECK(strstr(m, secret) == NULL);
  ascope_free(m);
  m = pg_scrub(msg, NULL);
  FZ_CHECK(m != NULL && strlen(m) == strlen(msg)); /* masks in place, never drops */
  ascope_free(m);

  char *guess = pg_dsn_secret_guess(dsn);
  if (guess) {
    FZ_CHECK(*guess != '\0' && strstr(dsn, guess) != NULL); /* a piece of the DSN */
    /* What the guess finds in the DSN, pg_scrub masks. */
    if (strchr(guess, '*') == NULL) {
      char *s = pg_scrub(dsn, guess);
      FZ_CHECK(s != NULL && strstr(s, guess) == NULL);
      ascope_free(s);
    }
  }
  ascope_free(guess);
  free(dsn);
  free(secret);
  free(msg);
  return 0;
}
