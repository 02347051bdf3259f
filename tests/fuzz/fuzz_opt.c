/* The core options tokenizer: ascope_opt_next, ascope_opt_bool,
 * ascope_opt_uint. Every driver's options string goes through it.
 *
 * Input: one byte choosing the pair buffer's size (small sizes exercise the
 * cut of an over-long pair), one byte choosing the maximum for the numbers,
 * then the options string. */
#include <ascope/driver.h>

#include "fuzz_util.h"

static void check_value(const char *v, uint64_t max) {
  int b = 7;
  if (ascope_opt_bool(v, &b) == 0)
    FZ_CHECK(b == 0 || b == 1);
  else
    FZ_CHECK(b == 7); /* a failure leaves *out alone */
  uint64_t u = 12345, u2;
  if (ascope_opt_uint(v, max, &u) == 0) {
    FZ_CHECK(u <= max);
    FZ_CHECK(v != NULL && *v != '\0' && strspn(v, "0123456789") == strlen(v));
    FZ_CHECK(ascope_opt_uint(v, UINT64_MAX, &u2) == 0 && u2 == u);
  } else {
    FZ_CHECK(u == 12345);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  size_t cap = 1 + fz_byte(&f) % 48;
  static const uint64_t maxes[] = {0, 1, 100, 86400000, UINT32_MAX, UINT64_MAX - 1, UINT64_MAX};
  uint64_t max = maxes[fz_byte(&f) % (sizeof maxes / sizeof *maxes)];
  char *s = fz_str(&f, NULL);
  char *buf = fz_xmalloc(cap), *key, *val;
  const char *end = s + strlen(s);

  FZ_CHECK(ascope_opt_next(s, buf, 0, &key, &val) == NULL);
  FZ_CHECK(ascope_opt_next(NULL, buf, cap, &key, &val) == NULL);
  for (const char *p = s, *next; (next = ascope_opt_next(p, buf, cap, &key, &val)) != NULL;
       p = next) {
    FZ_CHECK(next > p && next <= end); /* progress, and never past the end */
    FZ_CHECK(key == buf && strlen(key) < cap);
    FZ_CHECK(strpbrk(key, " ,\t=") == NULL);
    if (val) {
      FZ_CHECK(val > key && val < buf + cap);
      /* a separator in a value came quoted */
      if (strpbrk(val, " ,\t")) FZ_CHECK(memchr(p, '\'', (size_t)(next - p)) != NULL);
    }
    check_value(key, max);
    check_value(val, max);
  }
  check_value(s, max);
  free(buf);
  free(s);
  return 0;
}
