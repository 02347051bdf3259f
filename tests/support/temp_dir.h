/* A scratch directory for a test, under $TMPDIR as mkdtemp(3) users
 * expect (a CI runner or a user may point it elsewhere than /tmp), else
 * /tmp. Header-only, for every test binary. */
#ifndef ASCOPE_TEMP_DIR_H
#define ASCOPE_TEMP_DIR_H

#include <stdio.h>
#include <stdlib.h>

/* Where scratch files go: $TMPDIR, else /tmp. */
static inline const char *t_temp_root(void) {
  const char *root = getenv("TMPDIR");
  return root && *root ? root : "/tmp";
}

/* Makes "<$TMPDIR>/<prefix>-XXXXXX" in buf and returns buf, or NULL when
 * it does not fit or cannot be made. */
static inline char *t_temp_dir(char *buf, size_t cap, const char *prefix) {
  int n = snprintf(buf, cap, "%s/%s-XXXXXX", t_temp_root(), prefix);
  if (n < 0 || (size_t)n >= cap) return NULL;
  return mkdtemp(buf);
}

#endif
