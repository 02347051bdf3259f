/* Options strings, the one form every driver's options take:
 * "key=value" pairs separated by spaces, tabs or commas; a value holding
 * those is quoted as in libpq's conninfo, key='two words', with \' and \\
 * escaping inside.
 * Shared here so that every driver accepts the same spellings (a boolean
 * is 1/0, on/off, true/false or yes/no in all of them) and none
 * re-implements the tokenizer. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

static bool separator(char c) {
  return c == ' ' || c == ',' || c == '\t';
}

const char *ascope_opt_next(const char *s, char *buf, size_t cap, char **key, char **value) {
  if (s == NULL || buf == NULL || cap == 0) return NULL;
  while (separator(*s)) s++;
  if (*s == '\0') return NULL;
  size_t m = 0, eq = SIZE_MAX; /* bytes copied; where the '=' went */
  bool quoted = false;
  for (; *s && (quoted || !separator(*s)); s++) {
    char c = *s;
    if (quoted && c == '\\' && (s[1] == '\'' || s[1] == '\\')) {
      c = *++s;
    } else if (quoted && c == '\'') {
      quoted = false;
      continue;
    } else if (!quoted && c == '\'' && eq != SIZE_MAX && m == eq + 1) {
      quoted = true; /* only a value, and only from its first byte, is quoted */
      continue;
    } else if (c == '=' && eq == SIZE_MAX && m < cap - 1) {
      eq = m;
    }
    if (m < cap - 1) buf[m++] = c; /* an over-long pair is cut, then fails its check */
  }
  buf[m] = '\0';
  *key = buf;
  *value = eq != SIZE_MAX ? buf + eq + 1 : NULL;
  if (eq != SIZE_MAX) buf[eq] = '\0';
  return s;
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
