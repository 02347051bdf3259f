/* Telling a script from one statement.
 *
 * sql.h lets an exec without parameters run several statements. The
 * extended protocol that pipelining uses takes one statement per Parse, so
 * a script must go out through the simple protocol instead, alone on the
 * connection. This finds out which it is by looking for a top-level ';'
 * followed by more than blanks and comments, stepping over what can hide a
 * ';': quoted strings (standard, E'' with backslashes), quoted identifiers,
 * dollar-quoted bodies, and line and nested block comments. */
#include "internal.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

/* Past a '...' literal whose opening quote is at s; backslashes escape when
 * escapes is set (E'...'). */
static const char *skip_quoted(const char *s, char q, bool escapes) {
  for (s++; *s; s++) {
    if (escapes && *s == '\\' && s[1]) {
      s++;
    } else if (*s == q) {
      if (s[1] != q) return s + 1;
      s++; /* a doubled quote stands for itself */
    }
  }
  return s;
}

static const char *skip_block_comment(const char *s) {
  int depth = 0;
  while (*s) {
    if (s[0] == '/' && s[1] == '*') {
      depth++;
      s += 2;
    } else if (s[0] == '*' && s[1] == '/') {
      s += 2;
      if (--depth == 0) return s;
    } else {
      s++;
    }
  }
  return s;
}

/* A dollar quote's tag ($$ or $tag$) at s: its length, or 0 if it is not
 * one (a parameter $1 is not). */
static size_t dollar_tag(const char *s, const char *start) {
  if (s > start && (isalnum((unsigned char)s[-1]) || s[-1] == '_')) return 0;
  size_t i = 1;
  if (isdigit((unsigned char)s[1])) return 0;
  while (isalnum((unsigned char)s[i]) || s[i] == '_' || (unsigned char)s[i] >= 0x80) i++;
  return s[i] == '$' ? i + 1 : 0;
}

/* Past whatever token starts at s that may contain a ';'; s itself if none. */
static const char *skip_token(const char *s, const char *start) {
  if (*s == '\'') {
    bool e = s > start && (s[-1] == 'E' || s[-1] == 'e') &&
             (s - 1 == start || !isalnum((unsigned char)s[-2]));
    return skip_quoted(s, '\'', e);
  }
  if (*s == '"') return skip_quoted(s, '"', false);
  if (s[0] == '-' && s[1] == '-') return s + strcspn(s, "\n");
  if (s[0] == '/' && s[1] == '*') return skip_block_comment(s);
  if (*s == '$') {
    size_t n = dollar_tag(s, start);
    if (n == 0) return s + 1;
    const char *end = s + n;
    while ((end = strchr(end, '$')) != NULL && strncmp(end, s, n) != 0) end++;
    return end ? end + n : s + strlen(s);
  }
  return s;
}

/* Only blanks, semicolons and comments from s on. */
static bool only_trivia(const char *s, const char *start) {
  while (*s) {
    if (isspace((unsigned char)*s) || *s == ';') {
      s++;
      continue;
    }
    if ((s[0] == '-' && s[1] == '-') || (s[0] == '/' && s[1] == '*')) {
      s = skip_token(s, start);
      continue;
    }
    return false;
  }
  return true;
}

bool pg_sql_is_script(const char *sql) {
  for (const char *s = sql; *s;) {
    const char *t = skip_token(s, sql);
    if (t != s) {
      s = t;
      continue;
    }
    if (*s == ';') return !only_trivia(s + 1, sql);
    s++;
  }
  return false;
}

/* The parameters a statement takes: its highest $N outside strings,
 * quoted identifiers, comments and dollar-quoted bodies (a function's body
 * may use $1 of its own). PostgreSQL counts them so too: $3 alone makes
 * three. A $ inside a name (a$1) is part of the name. */
int pg_sql_params(const char *sql) {
  int max = 0;
  for (const char *s = sql; *s;) {
    const char *t = skip_token(s, sql);
    if (t != s && *s != '$') {
      s = t;
      continue;
    }
    bool in_name = s > sql && (isalnum((unsigned char)s[-1]) || s[-1] == '_' || s[-1] == '$');
    if (*s == '$' && isdigit((unsigned char)s[1]) && !in_name) {
      long n = 0;
      for (s++; isdigit((unsigned char)*s); s++)
        if (n < 65536) n = n * 10 + (*s - '0');
      if (n > max) max = n > 65535 ? 65535 : (int)n;
      continue;
    }
    s = t != s ? t : s + 1;
  }
  return max;
}

bool pg_sql_is_copy(const char *sql) {
  const char *s = sql;
  for (;;) { /* past blanks and comments */
    while (isspace((unsigned char)*s)) s++;
    const char *t =
        (s[0] == '-' && s[1] == '-') || (s[0] == '/' && s[1] == '*') ? skip_token(s, sql) : s;
    if (t == s) break;
    s = t;
  }
  return strncasecmp(s, "copy", 4) == 0 && !isalnum((unsigned char)s[4]) && s[4] != '_';
}
