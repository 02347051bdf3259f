/* The file driver's resource: open at acquire, close (and, for an atomic
 * write, commit or discard) at release.
 *
 * Acquire and release are small state machines over one uv_fs_t kept in the
 * resource state: each step submits one request to the threadpool and
 * on_step() picks the next one, so the loop thread never blocks. Because the
 * core may reuse the state as soon as ascope_res_done() is called, that call
 * is always the last thing done, and only once no request is in flight.
 *
 * Atomic write: acquire stats the target (to keep its mode) and creates a
 * temporary file beside it with O_EXCL. Release with outcome 0 does
 * fsync(tmp), close, rename(tmp, target) and fsync(dir), so that after a
 * crash the target is either the old file or the complete new one; any other
 * outcome, or a failing step before the rename, closes and unlinks the
 * temporary file and the target is left as it was.
 */
#include "file_internal.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>

enum step {
  ST_NONE,
  /* acquire */
  ACQ_OPEN,
  ACQ_FSTAT,
  ACQ_STAT_TARGET,
  ACQ_OPEN_TMP,
  ACQ_FCHMOD,
  /* undoing a failed or cancelled acquire */
  ACQ_UNDO_CLOSE,
  ACQ_UNDO_UNLINK,
  /* release */
  REL_FSYNC,
  REL_CLOSE,
  REL_RENAME,
  REL_LINK,
  REL_UNLINK_LINKED,
  REL_OPEN_DIR,
  REL_FSYNC_DIR,
  REL_CLOSE_DIR,
  REL_DISCARD,
};

#define MAX_TMP_TRIES 16

static void on_step(uv_fs_t *req);

/* ---- messages ----------------------------------------------------------- */

char *file_msg_reason(const char *what, const char *path, const char *reason) {
  int n = snprintf(NULL, 0, "%s '%s': %s", what, path, reason);
  char *m = n < 0 ? NULL : ascope_malloc((size_t)n + 1);
  if (m) snprintf(m, (size_t)n + 1, "%s '%s': %s", what, path, reason);
  return m;
}

char *file_msg(const char *what, const char *path, int status) {
  return file_msg_reason(what, path ? path : "", uv_strerror(status));
}

/* Keeps the first error of an acquire or release; later ones are its
 * consequences (a close after a failed fsync) and would only hide it. */
static void record(ascope_file *f, int status, const char *what, const char *path) {
  if (f->err) return;
  f->err = status;
  f->errmsg = file_msg(what, path, status);
}

static void record_reason(ascope_file *f, int status, const char *what, const char *reason) {
  if (f->err) return;
  f->err = status;
  f->errmsg = file_msg_reason(what, f->path, reason);
}

/* ---- modes -------------------------------------------------------------- */

/* "r", "r+", "w", "w+", "a", "a+", "x", "x+" ("b" ignored, "wx" = "x", as in
 * C11), then flags separated by spaces: only "atomic" so far. Each letter
 * and each flag may be given once: a repeated one is more likely a mistake
 * (a flag meant to be another) than something to ignore. On an error *why
 * says what is wrong, for the acquire's message. */
static int parse_mode(const char *mode, size_t n, unsigned *fm, int *oflags, const char **why) {
  size_t i = 0;
  *why = "unknown mode: r, r+, w, w+, a, a+, x or x+ expected";
  while (i < n && mode[i] == ' ') i++;
  if (i == n) return UV_EINVAL;
  char base = mode[i++];
  unsigned m;
  int fl;
  switch (base) {
  case 'r':
    m = FM_READ, fl = O_RDONLY;
    break;
  case 'w':
    m = FM_WRITE, fl = O_WRONLY | O_CREAT | O_TRUNC;
    break;
  case 'a':
    m = FM_WRITE | FM_APPEND, fl = O_WRONLY | O_CREAT | O_APPEND;
    break;
  case 'x':
    m = FM_WRITE | FM_EXCL, fl = O_WRONLY | O_CREAT | O_EXCL;
    break;
  default:
    return UV_EINVAL;
  }
  bool plus = false, excl = base == 'x', bin = false;
  for (; i < n && mode[i] != ' '; i++) {
    if (mode[i] == '+' && !plus) {
      plus = true;
    } else if (mode[i] == 'x' && base == 'w' && !excl) {
      excl = true, m |= FM_EXCL, fl = (fl & ~O_TRUNC) | O_EXCL;
    } else if (mode[i] == 'b' && !bin) {
      bin = true;
    } else {
      if (mode[i] == '+')
        *why = "the letter '+' is given twice";
      else if (mode[i] == 'b')
        *why = "the letter 'b' is given twice";
      else if (mode[i] == 'x' && excl)
        *why = "the letter 'x' is given twice";
      return UV_EINVAL;
    }
  }
  if (plus) m |= FM_READ | FM_WRITE, fl = (fl & ~O_ACCMODE) | O_RDWR;
  while (i < n) {
    while (i < n && mode[i] == ' ') i++;
    size_t start = i;
    while (i < n && mode[i] != ' ') i++;
    if (i - start == 6 && memcmp(mode + start, "atomic", 6) == 0) {
      if (m & FM_ATOMIC) {
        *why = "the flag 'atomic' is given twice";
        return UV_EINVAL;
      }
      m |= FM_ATOMIC;
    } else if (i > start) {
      *why = "unknown flag: only 'atomic' is known";
      return UV_EINVAL;
    }
  }
  /* Atomic means "replace the whole file": reading or appending to the
   * old content would need a copy, which is not what the caller asked. */
  if ((m & FM_ATOMIC) && (base == 'r' || (m & FM_APPEND))) {
    *why = "'atomic' replaces the whole file: it goes with w, w+, x or x+ only";
    return UV_EINVAL;
  }
  *why = NULL;
  *fm = m;
  *oflags = fl | O_CLOEXEC;
  return 0;
}

/* ascope_use_file() packs "mode\npath" in the options, which the core
 * copies: then the caller's path need not outlive the call. */
static const char *split_options(const char *options, const void *arg, size_t *mlen) {
  const char *mode = options ? options : "r";
  const char *nl = strchr(mode, '\n');
  *mlen = nl ? (size_t)(nl - mode) : strlen(mode);
  if (arg) return arg;
  return nl ? nl + 1 : NULL;
}

int ascope_use_file(ascope *s, const char *path, const char *mode) {
  unsigned fm;
  int fl;
  if (s == NULL || path == NULL || *path == '\0' || mode == NULL || strchr(mode, '\n'))
    return UV_EINVAL;
  const char *why;
  if (parse_mode(mode, strlen(mode), &fm, &fl, &why)) return UV_EINVAL;
  size_t ml = strlen(mode), pl = strlen(path);
  char small[512];
  char *opts = ml + pl + 2 <= sizeof small ? small : ascope_malloc(ml + pl + 2);
  if (opts == NULL) return UV_ENOMEM;
  memcpy(opts, mode, ml);
  opts[ml] = '\n';
  memcpy(opts + ml + 1, path, pl + 1);
  int rc = ascope_use(s, &file_driver, NULL, opts);
  if (opts != small) ascope_free(opts);
  return rc;
}

const char *ascope_file_path(const ascope_file *f) {
  return f && f->magic == FILE_MAGIC ? f->path : NULL;
}

/* ---- requests ----------------------------------------------------------- */

static ascope_file *file_of(uv_fs_t *req) {
  return (ascope_file *)((char *)req - offsetof(ascope_file, req));
}

/* Every step goes through here. A request libuv refuses at once completes
 * like any other, with the error as its result. */
static void submitted(ascope_file *f, int step, int rc) {
  f->step = step;
  f->busy = true;
  if (rc < 0) {
    f->req.result = rc;
    on_step(&f->req);
  }
}

/* The fd is the file's no longer once its close is submitted, so that an
 * abort never closes it twice (the number may belong to someone else). */
static void submit_close(ascope_file *f, int step, uv_file *fdp) {
  uv_file fd = *fdp;
  *fdp = -1;
  f->req_fd = fd;
  submitted(f, step, uv_fs_close(f->loop, &f->req, fd, on_step));
}

static void close_now(uv_file *fdp) {
  if (*fdp < 0) return;
  uv_fs_t req;
  uv_fs_close(NULL, &req, *fdp, NULL); /* synchronous: only abort does this */
  uv_fs_req_cleanup(&req);
  *fdp = -1;
}

static void unlink_now(const char *path) {
  uv_fs_t req;
  uv_fs_unlink(NULL, &req, path, NULL);
  uv_fs_req_cleanup(&req);
}

static void free_names(ascope_file *f) {
  ascope_free(f->path);
  ascope_free(f->tmp);
  ascope_free(f->dir);
  f->path = f->tmp = f->dir = NULL;
}

/* Completes the acquire or release in flight with the recorded error. The
 * state may be reused from inside ascope_res_done(): nothing after it. */
static void complete(ascope_file *f, bool keep) {
  int status = f->err;
  char *msg = f->errmsg;
  ascope_res *r = f->res;
  f->errmsg = NULL;
  if (!keep) {
    free_names(f);
    f->magic = 0;
  }
  ascope_res_done(r, status, status ? ascope_err_name(status) : NULL, msg);
  ascope_free(msg);
}

/* ---- acquire ------------------------------------------------------------ */

static void acquire_undo(ascope_file *f) {
  if (f->fd >= 0)
    submit_close(f, ACQ_UNDO_CLOSE, &f->fd);
  else if (f->tmp_made)
    submitted(f, ACQ_UNDO_UNLINK, uv_fs_unlink(f->loop, &f->req, f->tmp, on_step));
  else
    complete(f, false);
}

static void acquire_fail(ascope_file *f, int status, const char *what, const char *path) {
  record(f, status, what, path);
  acquire_undo(f);
}

/* A name no other writer picks: the target's name, hidden, with a suffix
 * from the clock, the pid and a counter; O_EXCL settles any collision. */
static int tmp_name(ascope_file *f) {
  static atomic_uint counter; /* runtimes on other threads share it */
  const char *slash = strrchr(f->path, '/');
  const char *base = slash ? slash + 1 : f->path;
  int dirlen = slash ? (int)(slash - f->path + 1) : 0;
  int baselen = (int)strlen(base);
  if (baselen > 200) baselen = 200; /* keep under NAME_MAX */
  uint64_t x = uv_hrtime() ^ ((uint64_t)uv_os_getpid() << 32) ^
               ((uint64_t)(atomic_fetch_add(&counter, 1) + 1) * 0x9e3779b97f4a7c15u);
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9u;
  x ^= x >> 32;
  ascope_free(f->tmp);
  size_t cap = (size_t)dirlen + (size_t)baselen + 32;
  f->tmp = ascope_malloc(cap);
  if (f->tmp == NULL) return UV_ENOMEM;
  snprintf(f->tmp, cap, "%.*s.%.*s.%08x.tmp", dirlen, f->path, baselen, base, (unsigned)x);
  return 0;
}

static void open_tmp(ascope_file *f) {
  int rc = tmp_name(f);
  if (rc) {
    acquire_fail(f, rc, "create a temporary file for", f->path);
    return;
  }
  int fl = O_CREAT | O_EXCL | O_CLOEXEC | ((f->fm & FM_READ) ? O_RDWR : O_WRONLY);
  f->tries++;
  submitted(f, ACQ_OPEN_TMP, uv_fs_open(f->loop, &f->req, f->tmp, fl, (int)f->perm, on_step));
}

/* "dir/name" -> "dir/", "name" -> ".", "/name" -> "/" */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL) return ascope_strdup(".");
  size_t n = (size_t)(slash - path) + 1;
  char *d = ascope_malloc(n + 1);
  if (d) {
    memcpy(d, path, n);
    d[n] = '\0';
  }
  return d;
}

static void acquire_start(ascope_file *f) {
  if (!(f->fm & FM_ATOMIC)) {
    submitted(f, ACQ_OPEN, uv_fs_open(f->loop, &f->req, f->path, f->oflags, 0666, on_step));
    return;
  }
  const char *slash = strrchr(f->path, '/');
  if (slash && slash[1] == '\0') {
    acquire_fail(f, UV_EISDIR, "open", f->path);
    return;
  }
  f->dir = dir_of(f->path);
  if (f->dir == NULL) {
    acquire_fail(f, UV_ENOMEM, "open", f->path);
    return;
  }
  submitted(f, ACQ_STAT_TARGET, uv_fs_stat(f->loop, &f->req, f->path, on_step));
}

static void file_acquire(ascope_res *r, const void *arg, const char *options) {
  ascope_file *f = ascope_res_state(r);
  f->magic = FILE_MAGIC;
  f->res = r;
  f->loop = ascope_rt_loop(ascope_res_rt(r));
  f->fd = f->dirfd = f->req_fd = -1;
  size_t mlen;
  const char *mode = options ? options : "r";
  const char *path = split_options(options, arg, &mlen);
  if (path == NULL || *path == '\0') {
    f->err = UV_EINVAL;
    f->errmsg = ascope_strdup("open: no path given");
    complete(f, false);
    return;
  }
  f->path = ascope_strdup(path);
  if (f->path == NULL) {
    f->err = UV_ENOMEM;
    complete(f, false);
    return;
  }
  const char *why;
  if (parse_mode(mode, mlen, &f->fm, &f->oflags, &why)) {
    char reason[160];
    snprintf(reason, sizeof reason, "invalid mode '%.*s': %s", (int)(mlen < 40 ? mlen : 40), mode,
             why);
    record_reason(f, UV_EINVAL, "open", reason);
    complete(f, false);
    return;
  }
  acquire_start(f);
}

/* A cancel stops the request if it is still queued; a running one finishes
 * and on_step() undoes what it did. Undo steps are never cancelled: they
 * are what keeps the acquire from leaking. */
static void file_cancel(ascope_res *r) {
  ascope_file *f = ascope_res_state(r);
  if (f->cancelled) return;
  f->cancelled = true;
  if (f->busy && f->step >= ACQ_OPEN && f->step <= ACQ_FCHMOD) uv_cancel((uv_req_t *)&f->req);
}

static void on_target_stat(ascope_file *f, int res, const uv_stat_t *st) {
  if (res == UV_ENOENT) {
    f->perm = 0666; /* the umask applies at creation */
    open_tmp(f);
    return;
  }
  if (res < 0) {
    acquire_fail(f, res, "stat", f->path);
    return;
  }
  if (S_ISDIR(st->st_mode)) {
    acquire_fail(f, UV_EISDIR, "open", f->path);
    return;
  }
  if (f->fm & FM_EXCL) {
    acquire_fail(f, UV_EEXIST, "open", f->path);
    return;
  }
  /* Renaming over a device or a FIFO would replace it, not write to it. */
  if (!S_ISREG(st->st_mode)) {
    record_reason(f, UV_EINVAL, "atomic write to", "not a regular file");
    acquire_undo(f);
    return;
  }
  f->target_existed = true;
  f->perm = (unsigned)(st->st_mode & 07777);
  open_tmp(f);
}

static void acquire_step(ascope_file *f, int step, int res, const uv_stat_t *st) {
  switch (step) {
  case ACQ_OPEN:
    if (res < 0) {
      acquire_fail(f, res, "open", f->path);
      return;
    }
    f->fd = res;
    submitted(f, ACQ_FSTAT, uv_fs_fstat(f->loop, &f->req, f->fd, on_step));
    break;
  case ACQ_FSTAT:
    if (res < 0) {
      acquire_fail(f, res, "fstat", f->path);
      return;
    }
    /* open(O_RDONLY) succeeds on a directory; fopen users expect EISDIR. */
    if (S_ISDIR(st->st_mode)) {
      acquire_fail(f, UV_EISDIR, "open", f->path);
      return;
    }
    f->seekable = S_ISREG(st->st_mode) || S_ISBLK(st->st_mode);
    complete(f, true);
    break;
  case ACQ_STAT_TARGET:
    on_target_stat(f, res, st);
    break;
  case ACQ_OPEN_TMP:
    if (res == UV_EEXIST && f->tries < MAX_TMP_TRIES) {
      open_tmp(f);
      return;
    }
    if (res < 0) {
      acquire_fail(f, res, "create", f->tmp);
      return;
    }
    f->fd = res;
    f->tmp_made = true;
    f->seekable = true;
    if (f->target_existed)
      submitted(f, ACQ_FCHMOD, uv_fs_fchmod(f->loop, &f->req, f->fd, (int)f->perm, on_step));
    else
      complete(f, true);
    break;
  case ACQ_FCHMOD:
    if (res < 0) {
      acquire_fail(f, res, "chmod", f->tmp);
      return;
    }
    complete(f, true);
    break;
  case ACQ_UNDO_CLOSE:
    acquire_undo(f);
    break;
  case ACQ_UNDO_UNLINK:
    f->tmp_made = false;
    acquire_undo(f);
    break;
  }
}

/* The cancelled acquire's request came back: keep what it made so the undo
 * can remove it, and report the cancel. */
static void acquire_cancelled(ascope_file *f, int step, int res) {
  if (res >= 0 && (step == ACQ_OPEN || step == ACQ_OPEN_TMP)) {
    f->fd = res;
    if (step == ACQ_OPEN_TMP) f->tmp_made = true;
  }
  record(f, ASCOPE_ECANCELED, "open", f->path);
  acquire_undo(f);
}

/* ---- release ------------------------------------------------------------ */

static void release_discard(ascope_file *f) {
  f->committing = false;
  if (f->tmp_made)
    submitted(f, REL_DISCARD, uv_fs_unlink(f->loop, &f->req, f->tmp, on_step));
  else
    complete(f, false);
}

static void release_start(ascope_file *f) {
  f->rel_started = true;
  if (f->fd < 0) {
    complete(f, false);
    return;
  }
  f->committing = (f->fm & FM_ATOMIC) && f->outcome == 0;
  if (f->committing)
    submitted(f, REL_FSYNC, uv_fs_fsync(f->loop, &f->req, f->fd, on_step));
  else
    submit_close(f, REL_CLOSE, &f->fd);
}

static void after_close(ascope_file *f) {
  if (!(f->fm & FM_ATOMIC)) {
    complete(f, false);
    return;
  }
  if (!f->committing) {
    release_discard(f);
    return;
  }
  /* link(2) fails with EEXIST if the target appeared meanwhile: "x" keeps
   * its promise of never replacing a file. */
  if (f->fm & FM_EXCL)
    submitted(f, REL_LINK, uv_fs_link(f->loop, &f->req, f->tmp, f->path, on_step));
  else
    submitted(f, REL_RENAME, uv_fs_rename(f->loop, &f->req, f->tmp, f->path, on_step));
}

static void sync_dir(ascope_file *f) {
  submitted(f, REL_OPEN_DIR,
            uv_fs_open(f->loop, &f->req, f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, on_step));
}

static void release_step(ascope_file *f, int step, int res) {
  switch (step) {
  case REL_FSYNC:
    if (res < 0) {
      record(f, res, "fsync", f->tmp);
      f->committing = false;
    }
    submit_close(f, REL_CLOSE, &f->fd);
    break;
  case REL_CLOSE:
    if (res < 0) {
      record(f, res, "close", f->tmp ? f->tmp : f->path);
      f->committing = false;
    }
    after_close(f);
    break;
  case REL_RENAME:
  case REL_LINK:
    if (res < 0) {
      record(f, res, step == REL_RENAME ? "rename to" : "link to", f->path);
      release_discard(f);
      return;
    }
    if (step == REL_LINK) {
      submitted(f, REL_UNLINK_LINKED, uv_fs_unlink(f->loop, &f->req, f->tmp, on_step));
      return;
    }
    f->tmp_made = false;
    sync_dir(f);
    break;
  case REL_UNLINK_LINKED:
    f->tmp_made = false;
    if (res < 0) record(f, res, "unlink", f->tmp);
    sync_dir(f);
    break;
  case REL_OPEN_DIR:
    if (res < 0) {
      record(f, res, "open directory", f->dir);
      complete(f, false);
      return;
    }
    f->dirfd = res;
    submitted(f, REL_FSYNC_DIR, uv_fs_fsync(f->loop, &f->req, f->dirfd, on_step));
    break;
  case REL_FSYNC_DIR:
    /* Some file systems cannot sync a directory; the rename stands. */
    if (res < 0 && res != UV_EINVAL && res != UV_ENOTSUP) record(f, res, "fsync directory", f->dir);
    submit_close(f, REL_CLOSE_DIR, &f->dirfd);
    break;
  case REL_CLOSE_DIR:
    complete(f, false);
    break;
  case REL_DISCARD:
    f->tmp_made = false;
    if (res < 0 && res != UV_ENOENT) record(f, res, "unlink", f->tmp);
    complete(f, false);
    break;
  }
}

/* Operations still using the file come from scopes other than its own (its
 * own scope releases only once they are done). They are cancelled first, and
 * the release goes on when the last one is gone. */
static void cancel_ops(ascope_file *f) {
  for (;;) {
    struct fop *o = f->ops;
    while (o && (o->cancelled || o->ending)) o = o->next;
    if (o == NULL) return;
    o->cancelled = true;
    o->cancel(o);
  }
}

static void file_release(ascope_res *r, int outcome) {
  ascope_file *f = ascope_res_state(r);
  f->releasing = true;
  f->outcome = outcome;
  f->err = 0;
  if (f->nops) cancel_ops(f);
  if (f->nops == 0 && !f->rel_started) release_start(f);
}

/* ---- abort -------------------------------------------------------------- */

/* After an abort the state stays the driver's until every request that
 * points into it has come back; then the late completion frees it. */
static void abort_settle(ascope_file *f) {
  if (f->busy || f->nops) return;
  ascope_free(f->errmsg);
  f->errmsg = NULL;
  f->err = 0;
  complete(f, false);
}

/* Force close, synchronously: the only place the driver makes blocking
 * calls on the loop thread, because the release it replaces did not finish. */
static void file_abort(ascope_res *r) {
  ascope_file *f = ascope_res_state(r);
  if (f->magic != FILE_MAGIC || f->aborted) return;
  f->aborted = true;
  f->releasing = true;
  if (f->busy && uv_cancel((uv_req_t *)&f->req) == 0) close_now(&f->req_fd);
  close_now(&f->fd);
  close_now(&f->dirfd);
  if (f->tmp_made) {
    unlink_now(f->tmp);
    f->tmp_made = false;
  }
  cancel_ops(f);
  abort_settle(f);
}

/* A request that was in flight at the abort came back. */
static void aborted_step(ascope_file *f, int step, int res) {
  if (res >= 0 && (step == ACQ_OPEN || step == ACQ_OPEN_TMP || step == REL_OPEN_DIR)) {
    uv_file fd = res;
    close_now(&fd);
    if (step == ACQ_OPEN_TMP) unlink_now(f->tmp);
  }
  abort_settle(f);
}

void file_op_gone(ascope_file *f) {
  if (f->aborted)
    abort_settle(f);
  else if (f->releasing && f->nops == 0 && !f->rel_started)
    release_start(f);
}

/* ---- the dispatcher ----------------------------------------------------- */

static void on_step(uv_fs_t *req) {
  ascope_file *f = file_of(req);
  int res = (int)req->result;
  uv_stat_t st = req->statbuf;
  int step = f->step;
  uv_fs_req_cleanup(req);
  f->busy = false;
  f->step = ST_NONE;
  f->req_fd = -1;
  if (f->aborted)
    aborted_step(f, step, res);
  else if (step <= ACQ_FCHMOD && f->cancelled)
    acquire_cancelled(f, step, res);
  else if (step <= ACQ_UNDO_UNLINK)
    acquire_step(f, step, res, &st);
  else
    release_step(f, step, res);
}

const ascope_driver file_driver = {
    .abi = ASCOPE_DRIVER_ABI,
    .name = "file",
    .state_size = sizeof(ascope_file),
    .acquire = file_acquire,
    .release = file_release,
    .cancel = file_cancel,
    .abort = file_abort,
};

const ascope_driver *ascope_file_driver(void) {
  return &file_driver;
}

/* Found by name ("file") once the library is loaded: ascope_driver_find(). */
__attribute__((constructor)) static void file_driver_register(void) {
  ascope_driver_register(&file_driver);
}
