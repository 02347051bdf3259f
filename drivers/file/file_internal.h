/* The file driver's internals, shared by its three parts: the resource
 * (file_driver.c: open, atomic commit, close), the operations (file_ops.c)
 * and the streams of chunks and of lines (file_stream.c). */
#ifndef ASCOPE_FILE_INTERNAL_H
#define ASCOPE_FILE_INTERNAL_H

#include "ascope/file.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

extern const ascope_driver file_driver; /* ascope_file_driver() */

#define FILE_MAGIC 0x46494c45u /* "FILE": catches a handle that is not a file */

enum file_mode_bits {
  FM_READ = 1,
  FM_WRITE = 2,
  FM_APPEND = 4,
  FM_ATOMIC = 8,
  FM_EXCL = 16,
};

struct fop;

/* The per-resource state, allocated (zeroed) by the core. Everything in it
 * is touched on the loop thread only; the threadpool sees only the requests'
 * own fields and buffers. */
struct ascope_file {
  uint32_t magic;
  unsigned fm; /* FM_* */
  int oflags;  /* open(2) flags */
  ascope_res *res;
  uv_loop_t *loop;
  uv_file fd;     /* -1: not open (or its close is submitted) */
  uv_file dirfd;  /* the directory while a commit syncs it; else -1 */
  bool seekable;  /* a regular file: reads may use offsets and run ahead */
  char *path;     /* the caller's path, copied at acquire */
  char *tmp;      /* atomic: the temporary file, while it may exist */
  char *dir;      /* atomic: the directory to fsync after the rename */
  unsigned perm;  /* permission bits for the file created */
  unsigned tries; /* temporary names tried */
  bool tmp_made;  /* tmp exists on disk: ours to remove unless renamed */
  bool target_existed;

  /* The one acquire or release step in flight. */
  uv_fs_t req;
  int step;
  bool busy;
  uv_file req_fd; /* the fd a close step in flight closes, else -1 */

  bool cancelled;   /* the acquire was cancelled */
  bool releasing;   /* release called: no new operations */
  bool rel_started; /* the release steps began (after the operations ended) */
  bool committing;  /* atomic release with a good outcome */
  bool aborted;
  int outcome;
  int err;      /* the first error of this acquire or release */
  char *errmsg; /* its message, or NULL */

  /* Operations using the file. */
  struct fop *ops;
  size_t nops;
  struct fop *wq_head, *wq_tail; /* writes and syncs waiting for their turn */
  struct fop *writing;           /* the write or sync running */
};

/* An operation's common part; each kind embeds it first. */
struct fop {
  struct fop *prev, *next; /* in the file's ops */
  struct fop *qnext;       /* in the file's write queue */
  ascope_file *f;
  ascope *s;
  ascope_op *op;
  void *ud;
  void (*cancel)(struct fop *o); /* the kind's own cancel */
  bool cancelled;                /* told to stop */
  bool ending;                   /* its final callback runs or ran: cancel is a no-op */
};

/* "what 'path': reason", malloc'd; NULL when out of memory. file_msg's
 * reason is the status's text. */
char *file_msg(const char *what, const char *path, int status);
char *file_msg_reason(const char *what, const char *path, const char *reason);

/* The driver's part of the op life cycle. fop_check validates the handle and
 * the mode; fop_begin registers o with the scope and the file (returns
 * ASCOPE_ECANCELED when the scope takes no more work); fop_end unlinks o,
 * frees it and ends the op with rc (status and what describe the failure). */
int fop_check(ascope *s, const ascope_file *f, unsigned need);
int fop_begin(struct fop *o, ascope *s, ascope_file *f, void *ud, void (*cancel)(struct fop *));
void fop_end(struct fop *o, int rc, int status, const char *what);
/* fop_end with the failure told by `reason` instead of the status's text
 * (NULL: the status's text), when the status alone would not say what
 * happened. */
void fop_end_reason(struct fop *o, int rc, int status, const char *what, const char *reason);
/* Undoes fop_begin for a request libuv refused: the op ends with 0 and the
 * start function returns the error itself. */
void fop_abandon(struct fop *o);

/* The file side: an operation went away (a release or abort may go on). */
void file_op_gone(ascope_file *f);

#endif
