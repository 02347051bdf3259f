/* Status codes and error objects. */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* Whether libuv has a static text for status. For a code it does not know,
 * uv_strerror() and uv_err_name() return a new heap string on every call,
 * which nobody frees, cut to 32 bytes ("Unknown system error -2147483648"
 * does not fit). Only the codes of UV_ERRNO_MAP (libuv's own list, which its
 * switch uses too) are passed on: every other status gets the texts libuv
 * gives UV_UNKNOWN, which are static. */
#define KNOWN_UV_CODE(name, _) case UV_##name:
static bool uv_knows(int status) {
  switch (status) {
    UV_ERRNO_MAP(KNOWN_UV_CODE)
    return true;
  default:
    return false;
  }
}
#undef KNOWN_UV_CODE

const char *ascope_strerror(int status) {
  switch (status) {
  case 0:
    return "success";
  case ASCOPE_EDRIVER:
    return "driver error";
  case ASCOPE_ECLOSED:
    return "closed";
  case ASCOPE_EBUSY:
    return "not allowed in this state";
  default:
    if (status > 0) return "not an error status";
    return uv_knows(status) ? uv_strerror(status) : "unknown error";
  }
}

const char *ascope_err_name(int status) {
  switch (status) {
  case 0:
    return "OK";
  case ASCOPE_EDRIVER:
    return "ASCOPE_EDRIVER";
  case ASCOPE_ECLOSED:
    return "ASCOPE_ECLOSED";
  case ASCOPE_EBUSY:
    return "ASCOPE_EBUSY";
  default:
    if (status > 0 || !uv_knows(status)) return "UNKNOWN";
    return uv_err_name(status);
  }
}

/* The inverse of ascope_err_name, so that a binding never hard-codes
 * libuv's values, which follow the platform's errno. */
#define UV_CODE_BY_NAME(code, _)                                                                   \
  if (strcmp(name, #code) == 0) return UV_##code;
int ascope_err_value(const char *name) {
  if (name == NULL) return UV_UNKNOWN;
  if (strcmp(name, "OK") == 0) return 0;
  if (strncmp(name, "ASCOPE_", 7) == 0) {
    name += 7;
    if (strcmp(name, "EDRIVER") == 0) return ASCOPE_EDRIVER;
    if (strcmp(name, "ECLOSED") == 0) return ASCOPE_ECLOSED;
    if (strcmp(name, "EBUSY") == 0) return ASCOPE_EBUSY;
    if (strcmp(name, "ECANCELED") == 0) return ASCOPE_ECANCELED;
    if (strcmp(name, "ETIMEDOUT") == 0) return ASCOPE_ETIMEDOUT;
    return UV_UNKNOWN;
  }
  if (strncmp(name, "UV_", 3) == 0) name += 3;
  UV_ERRNO_MAP(UV_CODE_BY_NAME)
  return UV_UNKNOWN;
}
#undef UV_CODE_BY_NAME

unsigned ascope_version(void) {
  return (ASCOPE_VERSION_MAJOR << 16) | (ASCOPE_VERSION_MINOR << 8) | ASCOPE_VERSION_PATCH;
}

static void copy_bounded(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Records an error. The code and a short message fit in the object; a
 * longer message goes to a heap buffer kept for reuse. If that buffer cannot
 * grow the message is truncated rather than lost: an error path must never
 * fail for want of memory. */
void err_set(struct ascope_err *e, int status, const char *driver, const char *code,
             const char *message) {
  e->status = status;
  e->driver = driver;
  e->next = NULL;
  e->code = NULL;
  if (code && *code) {
    copy_bounded(e->codebuf, sizeof e->codebuf, code);
    e->code = e->codebuf;
  }
  if (message == NULL || *message == '\0') message = ascope_strerror(status);
  size_t n = strlen(message) + 1;
  if (n <= sizeof e->msgbuf) {
    memcpy(e->msgbuf, message, n);
    e->message = e->msgbuf;
    return;
  }
  if (n > e->heap_cap) {
    char *p = ascope__realloc(e->heap, n);
    if (p == NULL) {
      copy_bounded(e->msgbuf, sizeof e->msgbuf, message);
      e->message = e->msgbuf;
      return;
    }
    e->heap = p;
    e->heap_cap = n;
  }
  memcpy(e->heap, message, n);
  e->message = e->heap;
}

void err_fini(void *obj) {
  struct ascope_err *e = obj;
  ascope__free(e->heap);
  e->heap = NULL;
  e->heap_cap = 0;
}

int ascope_err_status(const ascope_err *e) {
  return e ? e->status : 0;
}

const char *ascope_err_driver(const ascope_err *e) {
  return e ? e->driver : NULL;
}

const char *ascope_err_code(const ascope_err *e) {
  return e ? e->code : NULL;
}

const char *ascope_err_message(const ascope_err *e) {
  return e ? e->message : NULL;
}

const ascope_err *ascope_err_next(const ascope_err *e) {
  return e ? e->next : NULL;
}

/* One error as "[driver] NAME code: message"; the parts that are missing
 * are left out. */
static int format_one(const ascope_err *e, char *buf, size_t len) {
  const char *drv = e->driver, *code = e->code, *msg = e->message;
  const char *name = ascope_err_name(e->status);
  if (code && (*code == '\0' || strcmp(code, name) == 0)) code = NULL; /* said once */
  return snprintf(buf, len, "%s%s%s%s%s%s: %s", drv ? "[" : "", drv ? drv : "", drv ? "] " : "",
                  name, code ? " " : "", code ? code : "",
                  msg && *msg ? msg : ascope_strerror(e->status));
}

int ascope_err_format(const ascope_err *e, char *buf, size_t len) {
  if (buf == NULL) len = 0;
  if (len) buf[0] = '\0';
  if (e == NULL) return 0;
  size_t total = 0;
  for (const ascope_err *x = e; x; x = x->next) {
    if (x != e) { /* what a release raised after the first error */
      const char *sep = "\n  then, releasing: ";
      int n = snprintf(total < len ? buf + total : NULL, total < len ? len - total : 0, "%s", sep);
      total += (size_t)n;
    }
    int n = format_one(x, total < len ? buf + total : NULL, total < len ? len - total : 0);
    if (n < 0) return UV_EINVAL;
    total += (size_t)n;
  }
  return total > INT_MAX ? INT_MAX : (int)total;
}
