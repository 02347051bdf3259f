/* ascope — seeing what a program's scopes did: a trace hook on the runtime
 * and a writer of Chrome / Perfetto trace-event JSON that plugs into it.
 *
 * The hook is called on the loop thread, at the moment each thing happens:
 * a scope starts and ends, each use is acquired and released, an operation
 * begins and ends, a deadline fires, a scope is cancelled or fails. With no
 * hook set, the core pays one predictable branch at each of those points.
 * docs/guides/tracing.md shows how to read a trace.
 */
#ifndef ASCOPE_TRACE_H
#define ASCOPE_TRACE_H

#include "ascope.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What happened. Fixed values: bindings rely on them, new kinds are added
 * at the end. A hook ignores kinds it does not know. */
typedef enum ascope_trace_kind {
  ASCOPE_TRACE_SCOPE_BEGIN = 1, /* ascope_start() */
  ASCOPE_TRACE_SCOPE_END,       /* every use released; status = the scope's; done runs next */
  ASCOPE_TRACE_ACQUIRE_BEGIN,   /* id = the use's index */
  ASCOPE_TRACE_ACQUIRE_END,     /* status = the acquire's */
  ASCOPE_TRACE_BODY_BEGIN,      /* every use held: the body runs */
  ASCOPE_TRACE_BODY_END,        /* operations and children all ended: releasing begins */
  ASCOPE_TRACE_RELEASE_BEGIN,   /* id = the use's index; outcome = what release is told */
  ASCOPE_TRACE_RELEASE_END,     /* status = the release's (ETIMEDOUT once aborted) */
  ASCOPE_TRACE_OP_BEGIN,        /* id = the operation's id */
  ASCOPE_TRACE_OP_END,          /* status = what the scope sees */
  ASCOPE_TRACE_DEADLINE,        /* the scope's deadline passed; id = its ms */
  ASCOPE_TRACE_CANCEL,  /* cancelled: by ascope_cancel() (id 0) or as its parent stopped (1) */
  ASCOPE_TRACE_ERROR,   /* the scope's first error: status, driver, code, message */
  ASCOPE_TRACE_ABORT,   /* a release overran the release timeout: the driver's abort runs */
  ASCOPE_TRACE_RT_FREE, /* the runtime is being freed: the last call of the hook */
  ASCOPE_TRACE_NOTE     /* a driver's note, worth a log line but no error: driver, code,
                           message; scope_id 0 when no scope holds the resource */
} ascope_trace_kind;

/* One event, valid during the call only: copy what you keep. The struct
 * grows at its end; `size` is the sizeof the library filled in, so a hook
 * built against a newer header reads a field only when
 * offsetof(ascope_trace_event, field) < ev->size. */
typedef struct ascope_trace_event {
  size_t size;
  int kind;               /* ascope_trace_kind */
  int status;             /* *_END, ERROR, ABORT: 0 or a negative status; else 0 */
  int outcome;            /* RELEASE_*: the status the release is told (the scope's) */
  uint64_t ts_ns;         /* uv_hrtime(): monotonic nanoseconds */
  uint64_t scope_id;      /* from 1 per runtime, never reused; 0 for RT_FREE */
  uint64_t parent_id;     /* the parent scope's id; 0 for a top-level scope */
  uint64_t id;            /* the use index, operation id or deadline: see the kinds */
  const char *scope_name; /* ascope_set_name()'s, or NULL */
  const char *driver;     /* the driver's name; NULL when the core acts by itself */
  /* ACQUIRE_* and RELEASE_*: the target of a use appended with a string
   * target (ascope_use_str, every SQL driver's DSN or path), passwords and
   * other secrets replaced by "***"; NULL for an opaque target. */
  const char *target;
  const char *code;    /* the driver's error code, or NULL */
  const char *message; /* ERROR, SCOPE_END (its first error), CANCEL: or NULL */
} ascope_trace_event;

typedef void (*ascope_trace_fn)(const ascope_trace_event *ev, void *ud);

/* Sets the runtime's one hook; fn NULL turns tracing off. On the loop
 * thread, anywhere, the hook itself included (the new hook gets the next
 * event). Returns 0, or UV_EINVAL for a NULL runtime. */
ASCOPE_EXTERN int ascope_rt_set_trace(ascope_rt *rt, ascope_trace_fn fn, void *ud);

/* Copies into buf (as snprintf: returns the length needed) a target with
 * its secrets replaced by "***": the password of scheme://user:pass@host,
 * and the value of every key=value pair whose key names a secret
 * (password, passwd, pwd, secret, token, key, auth, credential, signature:
 * any key containing one of these, case-insensitively), in a DSN's
 * "k=v k='v'" list or a URL's query. The rule the trace applies. */
ASCOPE_EXTERN int ascope_trace_redact(const char *target, char *buf, size_t len);

/* ---- the Chrome / Perfetto JSON writer ----------------------------------- */
typedef struct ascope_trace_json ascope_trace_json;

/* Creates path (truncating it) and, with rt, installs the writer as rt's
 * hook. With rt NULL nothing is installed: forward events from your own
 * hook with ascope_trace_json_event. Returns 0 and the writer in *out, or
 * UV_EINVAL, UV_ENOMEM, or the negated errno of fopen. */
ASCOPE_EXTERN int ascope_trace_json_open(ascope_rt *rt, const char *path, ascope_trace_json **out);
/* The writer's hook: ud is the writer. */
ASCOPE_EXTERN void ascope_trace_json_event(const ascope_trace_event *ev, void *ud);
/* Removes the writer from the runtime whose hook it still is (installed by
 * ascope_trace_json_open or ascope_rt_set_trace), ends every span still open
 * (marked "unfinished"), completes the JSON and closes the file. Returns 0,
 * or the first write error as a negated errno; frees the writer either way. */
ASCOPE_EXTERN int ascope_trace_json_close(ascope_trace_json *w);

#ifdef __cplusplus
}
#endif
#endif /* ASCOPE_TRACE_H */
