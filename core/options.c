/* Options strings, the one form every driver's options take:
 * "key=value" pairs separated by spaces, tabs or commas. Shared here so that
 * every driver accepts the same spellings (a boolean is 1/0, on/off,
 * true/false or yes/no in all of them) and none re-implements the tokenizer. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

const char *ascope_opt_next(const char *s, char *buf, size_t cap, char **key, char **value) {
  if (s == NULL || buf == NULL || cap == 0) return NULL;
  while (*s == ' ' || *s == ',' || *s == '\t') s++;
  if (*s == '\0') return NULL;
  size_t n = strcspn(s, " ,\t");
  size_t m = n < cap - 1 ? n : cap - 1; /* an over-long pair is cut, then fails its check */
  memcpy(buf, s, m);
  buf[m] = '\0';
  *key = buf;
  char *eq = strchr(buf, '=');
  *value = eq ? eq + 1 : NULL;
  if (eq) *eq = '\0';
  return s + n;
}

int ascope_opt_bool(const char *v, int *out) {
  static const char *const yes[] = {"1", "on", "true", "yes"}, *const no[] = {"0", "off", "false",
                                                                              "no"};
  for (int i = 0; v && i < 4; i++) {
    if (!strcmp(v, yes[i])) return *out = 1, 0;
    if (!strcmp(v, no[i])) return *out = 0, 0;
  }
  return UV_EINVAL;
}

int ascope_opt_uint(const char *v, uint64_t max, uint64_t *out) {
  /* strtoull accepts a sign and leading blanks; an option value may not */
  if (v == NULL || *v < '0' || *v > '9') return UV_EINVAL;
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (*end || errno == ERANGE || n > max) return UV_EINVAL;
  *out = n;
  return 0;
}
