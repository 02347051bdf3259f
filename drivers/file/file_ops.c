/* The file driver's operations: read, read_all, write, sync, stat.
 *
 * Each operation is one heap object holding its uv_fs_t and buffers, linked
 * into its file and registered with its scope. It ends exactly once: from
 * its request's callback, or, for a write still waiting in the queue, from
 * its cancel. A cancel stops a queued request with uv_cancel(); a running one
 * finishes and the operation reports ASCOPE_ECANCELED.
 *
 * Writes and syncs go through a FIFO and run one at a time, so they happen
 * in the order they were called and a sync covers every write before it.
 * Reads and stats start at once: they may run beside each other and beside a
 * write (wait for a write's callback to read what it wrote).
 */
#include "file_internal.h"

#include <sys/stat.h>

#define container(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

/* ---- the common part ---------------------------------------------------- */

int fop_check(ascope *s, const ascope_file *f, unsigned need) {
  if (s == NULL || f == NULL || f->magic != FILE_MAGIC) return UV_EINVAL;
  if (f->releasing || f->fd < 0) return ASCOPE_ECLOSED;
  if ((f->fm & need) != need) return UV_EBADF;
  return 0;
}

static void on_op_cancel(ascope_op *op) {
  struct fop *o = ascope_op_data(op);
  if (o->cancelled || o->ending) return;
  o->cancelled = true;
  o->cancel(o);
}

int fop_begin(struct fop *o, ascope *s, ascope_file *f, void *ud, void (*cancel)(struct fop *)) {
  o->f = f;
  o->s = s;
  o->ud = ud;
  o->cancel = cancel;
  o->op = ascope_op_begin(s, &file_driver, on_op_cancel, o);
  if (o->op == NULL) return ASCOPE_ECANCELED;
  o->prev = NULL;
  o->next = f->ops;
  if (f->ops) f->ops->prev = o;
  f->ops = o;
  f->nops++;
  return 0;
}

static void fop_unlink(struct fop *o) {
  ascope_file *f = o->f;
  if (o->prev)
    o->prev->next = o->next;
  else
    f->ops = o->next;
  if (o->next) o->next->prev = o->prev;
  f->nops--;
}

void fop_end(struct fop *o, int rc, int status, const char *what) {
  fop_end_reason(o, rc, status, what, NULL);
}

void fop_end_reason(struct fop *o, int rc, int status, const char *what, const char *reason) {
  ascope_file *f = o->f;
  ascope_op *op = o->op;
  char *msg = status >= 0 ? NULL
              : reason    ? file_msg_reason(what, f->path, reason)
                          : file_msg(what, f->path, status);
  const char *code = status < 0 ? ascope_err_name(status) : NULL;
  fop_unlink(o);
  ascope_free(o);
  /* May resume a release waiting for this op: the file is not touched after. */
  file_op_gone(f);
  ascope_op_end(op, rc, code, msg);
  ascope_free(msg);
}

void fop_abandon(struct fop *o) {
  ascope_op *op = o->op;
  ascope_file *f = o->f;
  fop_unlink(o);
  ascope_free(o);
  file_op_gone(f);
  ascope_op_end(op, 0, NULL, NULL);
}

/* The user's callback decides what the scope sees; without one, an error
 * fails the scope. */
#define CALL_OR(o, cb, status, ...) ((cb) ? (cb)((o)->s, (status), __VA_ARGS__, (o)->ud) : (status))
#define CALL_OR0(o, cb, status) ((cb) ? (cb)((o)->s, (status), (o)->ud) : (status))

static void cancel_req(struct fop *o, uv_fs_t *req) {
  (void)o;
  uv_cancel((uv_req_t *)req);
}

/* ---- read --------------------------------------------------------------- */

struct read_op {
  struct fop o;
  ascope_file_data_cb cb;
  uv_fs_t req;
  char *buf;
  bool owned; /* ours to free; else the caller's (ascope_file_read_into) */
};

static void read_cancel(struct fop *o) {
  cancel_req(o, &container(o, struct read_op, o)->req);
}

static void on_read(uv_fs_t *req) {
  struct read_op *r = container(req, struct read_op, req);
  int status = req->result < 0 ? (int)req->result : 0;
  size_t n = req->result > 0 ? (size_t)req->result : 0;
  uv_fs_req_cleanup(req);
  if (r->o.cancelled) {
    status = ASCOPE_ECANCELED;
    n = 0;
  }
  r->o.ending = true;
  int rc = CALL_OR(&r->o, r->cb, status, status ? NULL : r->buf, n);
  if (r->owned) ascope_free(r->buf);
  fop_end(&r->o, rc, status, "read");
}

static int read_start(ascope *s, ascope_file *f, char *buf, bool owned, size_t len, int64_t offset,
                      ascope_file_data_cb cb, void *ud) {
  struct read_op *r = ascope_calloc(1, sizeof *r);
  if (r == NULL) return UV_ENOMEM;
  r->cb = cb;
  r->buf = buf;
  r->owned = owned;
  int rc = fop_begin(&r->o, s, f, ud, read_cancel);
  if (rc) {
    ascope_free(r);
    return rc;
  }
  uv_buf_t b = uv_buf_init(buf, (unsigned)len);
  rc = uv_fs_read(f->loop, &r->req, f->fd, &b, 1, offset, on_read);
  if (rc) fop_abandon(&r->o);
  return rc;
}

int ascope_file_read(ascope *s, ascope_file *f, size_t len, int64_t offset, ascope_file_data_cb cb,
                     void *ud) {
  int rc = fop_check(s, f, FM_READ);
  if (rc) return rc;
  if (offset < -1 || len > UINT32_MAX) return UV_EINVAL;
  char *buf = ascope_malloc(len ? len : 1);
  if (buf == NULL) return UV_ENOMEM;
  rc = read_start(s, f, buf, true, len, offset, cb, ud);
  if (rc) ascope_free(buf);
  return rc;
}

/* The caller's buffer: one copy fewer, for chunks the caller keeps anyway
 * (a binding reads straight into the object it hands its user). */
int ascope_file_read_into(ascope *s, ascope_file *f, void *buf, size_t len, int64_t offset,
                          ascope_file_data_cb cb, void *ud) {
  int rc = fop_check(s, f, FM_READ);
  if (rc) return rc;
  if (offset < -1 || len > UINT32_MAX || (buf == NULL && len > 0)) return UV_EINVAL;
  static char none;
  return read_start(s, f, buf ? buf : &none, false, len, offset, cb, ud);
}

/* ---- read_all ----------------------------------------------------------- */

struct read_all_op {
  struct fop o;
  ascope_file_data_cb cb;
  uv_fs_t req;
  char *buf;
  size_t len, cap, max;
  bool reading; /* past the fstat */
};

static void read_all_cancel(struct fop *o) {
  cancel_req(o, &container(o, struct read_all_op, o)->req);
}

static void read_all_finish(struct read_all_op *r, int status) {
  if (r->o.cancelled) status = ASCOPE_ECANCELED;
  if (status == 0) r->buf[r->len] = '\0';
  r->o.ending = true;
  int rc = CALL_OR(&r->o, r->cb, status, status ? NULL : r->buf, status ? 0 : r->len);
  ascope_free(r->buf);
  fop_end(&r->o, rc, status, status == UV_EFBIG ? "read_all (over the size limit)" : "read_all");
}

static void on_read_all(uv_fs_t *req);

/* Reads into the free space, always leaving one byte for the NUL. The
 * buffer grows by doubling up to max + 2: reading max + 1 bytes is how a
 * file over the limit shows itself, whatever fstat said. */
static void read_all_next(struct read_all_op *r) {
  if (r->len + 1 == r->cap) {
    size_t cap = r->cap * 2 < r->max + 2 ? r->cap * 2 : r->max + 2;
    char *p = ascope_realloc(r->buf, cap);
    if (p == NULL) {
      read_all_finish(r, UV_ENOMEM);
      return;
    }
    r->buf = p;
    r->cap = cap;
  }
  size_t want = r->cap - 1 - r->len;
  if (want > (1u << 30)) want = 1u << 30;
  uv_buf_t b = uv_buf_init(r->buf + r->len, (unsigned)want);
  int64_t off = r->o.f->seekable ? (int64_t)r->len : -1;
  int rc = uv_fs_read(r->o.f->loop, &r->req, r->o.f->fd, &b, 1, off, on_read_all);
  if (rc) read_all_finish(r, rc);
}

/* After the fstat: a regular file's size sizes the buffer (and may already
 * be over the limit); anything else starts small. */
static void read_all_start(struct read_all_op *r, uint64_t size, bool regular) {
  r->reading = true;
  if (regular && size > r->max) {
    read_all_finish(r, UV_EFBIG);
    return;
  }
  size_t want = regular ? (size_t)size + 2 : 64 * 1024;
  r->cap = want < r->max + 2 ? want : r->max + 2;
  if ((r->buf = ascope_malloc(r->cap)) == NULL) {
    read_all_finish(r, UV_ENOMEM);
    return;
  }
  read_all_next(r);
}

static void on_read_all(uv_fs_t *req) {
  struct read_all_op *r = container(req, struct read_all_op, req);
  ssize_t res = req->result;
  uint64_t size = req->statbuf.st_size;
  bool regular = S_ISREG(req->statbuf.st_mode);
  uv_fs_req_cleanup(req);
  if (res < 0 || r->o.cancelled) {
    read_all_finish(r, res < 0 ? (int)res : 0);
  } else if (!r->reading) {
    read_all_start(r, size, regular);
  } else if (res == 0) {
    read_all_finish(r, 0);
  } else {
    r->len += (size_t)res;
    if (r->len > r->max)
      read_all_finish(r, UV_EFBIG);
    else
      read_all_next(r);
  }
}

int ascope_file_read_all(ascope *s, ascope_file *f, size_t max, ascope_file_data_cb cb, void *ud) {
  int rc = fop_check(s, f, FM_READ);
  if (rc) return rc;
  struct read_all_op *r = ascope_calloc(1, sizeof *r);
  if (r == NULL) return UV_ENOMEM;
  r->cb = cb;
  r->max = max > SIZE_MAX - 2 ? SIZE_MAX - 2 : max;
  if ((rc = fop_begin(&r->o, s, f, ud, read_all_cancel))) {
    ascope_free(r);
    return rc;
  }
  rc = uv_fs_fstat(f->loop, &r->req, f->fd, on_read_all);
  if (rc) fop_abandon(&r->o);
  return rc;
}

/* ---- write and sync: the ordered queue ---------------------------------- */

struct write_op {
  struct fop o;
  ascope_file_cb cb;
  uv_fs_t req;
  bool is_sync;
  bool running;
  char *buf;
  size_t len, done;
  int64_t offset; /* -1: at the file position */
};

static void wq_kick(ascope_file *f);

static void write_finish(struct write_op *w, int status) {
  ascope_file *f = w->o.f;
  if (w->running) f->writing = NULL;
  w->o.ending = true;
  int rc = CALL_OR0(&w->o, w->cb, status);
  ascope_free(w->buf);
  wq_kick(f); /* the next in line starts before this one ends */
  fop_end(&w->o, rc, status, w->is_sync ? "fsync" : "write");
}

static void on_write(uv_fs_t *req);

static void write_submit(struct write_op *w) {
  ascope_file *f = w->o.f;
  int rc;
  if (w->is_sync) {
    rc = uv_fs_fsync(f->loop, &w->req, f->fd, on_write);
  } else {
    size_t left = w->len - w->done;
    uv_buf_t b = uv_buf_init(w->buf + w->done, left > (1u << 30) ? 1u << 30 : (unsigned)left);
    int64_t off = w->offset < 0 ? -1 : w->offset + (int64_t)w->done;
    rc = uv_fs_write(f->loop, &w->req, f->fd, &b, 1, off, on_write);
  }
  if (rc) write_finish(w, rc);
}

static void on_write(uv_fs_t *req) {
  struct write_op *w = container(req, struct write_op, req);
  ssize_t res = req->result;
  uv_fs_req_cleanup(req);
  if (res >= 0) w->done += (size_t)res;
  if (res < 0)
    write_finish(w, w->o.cancelled ? ASCOPE_ECANCELED : (int)res);
  else if (w->is_sync || w->done == w->len)
    write_finish(w, 0);
  else if (w->o.cancelled)
    write_finish(w, ASCOPE_ECANCELED);
  else if (res == 0)
    write_finish(w, UV_EIO); /* write(2) returning 0 would loop forever */
  else
    write_submit(w); /* a partial write: the rest goes on */
}

static void wq_kick(ascope_file *f) {
  if (f->writing || f->wq_head == NULL || f->fd < 0 || f->releasing) return;
  struct fop *o = f->wq_head;
  f->wq_head = o->qnext;
  if (f->wq_head == NULL) f->wq_tail = NULL;
  struct write_op *w = container(o, struct write_op, o);
  f->writing = o;
  w->running = true;
  write_submit(w);
}

/* A queued write never started: it ends now. A running one is asked to stop
 * and ends from its callback. */
static void write_cancel(struct fop *o) {
  struct write_op *w = container(o, struct write_op, o);
  if (w->running) {
    uv_cancel((uv_req_t *)&w->req);
    return;
  }
  ascope_file *f = o->f;
  struct fop **pp = &f->wq_head, *prev = NULL;
  while (*pp != o) {
    prev = *pp;
    pp = &(*pp)->qnext;
  }
  *pp = o->qnext;
  if (f->wq_tail == o) f->wq_tail = prev;
  write_finish(w, ASCOPE_ECANCELED);
}

static int write_enqueue(ascope *s, ascope_file *f, struct write_op *w, void *ud) {
  int rc = fop_begin(&w->o, s, f, ud, write_cancel);
  if (rc) {
    ascope_free(w->buf);
    ascope_free(w);
    return rc;
  }
  if (f->wq_tail)
    f->wq_tail->qnext = &w->o;
  else
    f->wq_head = &w->o;
  f->wq_tail = &w->o;
  wq_kick(f);
  return 0;
}

int ascope_file_write(ascope *s, ascope_file *f, const void *data, size_t len, int64_t offset,
                      ascope_file_cb cb, void *ud) {
  int rc = fop_check(s, f, FM_WRITE);
  if (rc) return rc;
  if (offset < -1 || (data == NULL && len)) return UV_EINVAL;
  struct write_op *w = ascope_calloc(1, sizeof *w);
  char *buf = ascope_malloc(len ? len : 1);
  if (w == NULL || buf == NULL) {
    ascope_free(w);
    ascope_free(buf);
    return UV_ENOMEM;
  }
  if (len) memcpy(buf, data, len);
  w->cb = cb;
  w->buf = buf;
  w->len = len;
  w->offset = offset;
  return write_enqueue(s, f, w, ud);
}

int ascope_file_sync(ascope *s, ascope_file *f, ascope_file_cb cb, void *ud) {
  int rc = fop_check(s, f, 0);
  if (rc) return rc;
  struct write_op *w = ascope_calloc(1, sizeof *w);
  if (w == NULL) return UV_ENOMEM;
  w->cb = cb;
  w->is_sync = true;
  return write_enqueue(s, f, w, ud);
}

/* ---- stat --------------------------------------------------------------- */

struct stat_op {
  struct fop o;
  ascope_file_stat_cb cb;
  uv_fs_t req;
};

static void stat_cancel(struct fop *o) {
  cancel_req(o, &container(o, struct stat_op, o)->req);
}

static void on_stat(uv_fs_t *req) {
  struct stat_op *t = container(req, struct stat_op, req);
  int status = req->result < 0 ? (int)req->result : 0;
  uv_stat_t st = req->statbuf;
  uv_fs_req_cleanup(req);
  if (t->o.cancelled) status = ASCOPE_ECANCELED;
  t->o.ending = true;
  int rc = CALL_OR(&t->o, t->cb, status, status ? NULL : &st);
  fop_end(&t->o, rc, status, "fstat");
}

int ascope_file_stat(ascope *s, ascope_file *f, ascope_file_stat_cb cb, void *ud) {
  int rc = fop_check(s, f, 0);
  if (rc) return rc;
  struct stat_op *t = ascope_calloc(1, sizeof *t);
  if (t == NULL) return UV_ENOMEM;
  t->cb = cb;
  if ((rc = fop_begin(&t->o, s, f, ud, stat_cancel))) {
    ascope_free(t);
    return rc;
  }
  rc = uv_fs_fstat(f->loop, &t->req, f->fd, on_stat);
  if (rc) fop_abandon(&t->o);
  return rc;
}
