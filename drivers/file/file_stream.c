/* The file streams: `async for chunk in file` and `async for line in file`.
 *
 * A stream owns DEPTH read buffers ("slots") of `block` bytes (the chunk, or
 * a multiple of it of at least 2 MiB; a line stream's read_size) and keeps a
 * read in flight in each free one, so the threadpool reads ahead while the
 * caller handles a chunk. Reads may finish out of order (several threadpool
 * threads); they are delivered strictly in file order, by matching a slot's
 * offset with the next byte due, and cut into chunks. A short read (the end of the file, or a file
 * changing underneath) restarts the reads after the bytes it did return: the reads already in
 * flight belong to an older generation and are dropped when they come back.
 *
 * Memory is the slots and nothing else: however long the file and however
 * long the caller pauses, the stream holds DEPTH * block bytes
 * (ascope_file_stream_memory). While paused it starts no reads; the ones in
 * flight land in their slots and wait.
 *
 * pump() is the one place that moves the stream. A user callback may re-enter
 * it (resume, or a cancel through ascope_fail); in_pump turns that into
 * "look again" instead of recursion.
 *
 * A line stream is the same reader with another cutter: deliver_line()
 * finds the delimiter from where the current read was left and hands the
 * caller a pointer into the read's buffer. Only a line that a read boundary
 * cuts in two is copied, into the carry buffer, which never holds more than
 * one line of at most max_line bytes (plus a \r and the delimiter): that is
 * the only memory a line stream adds.
 */
#include "file_internal.h"

#include <stdio.h>

#define DEPTH 2              /* reads in flight: one runs while the caller works */
#define MIN_BLOCK (2u << 20) /* smaller chunks are cut from reads of this size */
#define MAX_CHUNK (1u << 30)
#define DEFAULT_MAX_LINE 65536

enum slot_state { SLOT_FREE, SLOT_BUSY, SLOT_READY, SLOT_CURRENT };

struct stream_op;

struct slot {
  uv_fs_t req;
  struct stream_op *st;
  char *buf;
  int64_t off;
  unsigned gen;
  ssize_t result; /* bytes read, or the error */
  size_t used;    /* bytes of it delivered so far */
  enum slot_state state;
};

/* A line stream's cutter. */
struct lines {
  bool on; /* a line stream */
  unsigned char delim;
  bool crlf, keep_delim;
  size_t max;    /* the longest line accepted, without delimiter or dropped \r */
  char *carry;   /* the start of a line that a read boundary cut */
  size_t clen;   /* its bytes so far: > 0 whenever a line is pending */
  size_t ccap;   /* grows to max + 2 at most */
  int64_t start; /* the offset of the current line's first byte */
  char *reason;  /* why the stream failed, when the status does not say it */
};

struct stream_op {
  struct fop o; /* first: ascope_op_data() is also the stream */
  ascope_file_data_cb cb;
  size_t chunk, block;
  unsigned depth, inflight, gen;
  int64_t read_pos;    /* where the next read starts */
  int64_t deliver_pos; /* the next byte the caller gets */
  struct slot *cur;    /* the read being cut into chunks */
  int end_status;
  bool paused, stopping, in_pump, repump, in_cb, resume_asked;
  char *mem; /* the slots' buffers, one block */
  struct lines ln;
  struct slot slots[DEPTH];
};

/* Every read costs a threadpool round trip (a worker wakes, the loop wakes)
 * whatever its size, so small chunks are cut from 2 MiB reads: the caller
 * still gets `chunk` bytes per call, and the round trips stay rare. Measured
 * on a 2-core machine from the page cache (bench/file_bench): 64 KiB reads
 * reach ~0.45x of cat, 1 MiB reads ~0.85x, 2 MiB reads ~0.95-1.0x. */
static size_t block_for(size_t chunk) {
  if (chunk >= MIN_BLOCK) return chunk;
  return (MIN_BLOCK + chunk - 1) / chunk * chunk;
}

size_t ascope_file_stream_memory(size_t chunk) {
  if (chunk == 0 || chunk > MAX_CHUNK) return 0;
  return DEPTH * block_for(chunk);
}

static void on_slot(uv_fs_t *req);

static void stop(struct stream_op *st, int status) {
  if (st->stopping) return;
  st->stopping = true;
  st->end_status = status;
  for (unsigned i = 0; i < st->depth; i++)
    if (st->slots[i].state == SLOT_BUSY) uv_cancel((uv_req_t *)&st->slots[i].req);
}

/* Reads made for an older generation, or after the stream stopped, are
 * nobody's: their slots are free again. */
static void reap(struct stream_op *st) {
  for (unsigned i = 0; i < st->depth; i++) {
    struct slot *sl = &st->slots[i];
    if (sl->state == SLOT_READY && (st->stopping || sl->gen != st->gen)) sl->state = SLOT_FREE;
  }
  if (st->stopping && st->cur) {
    st->cur->state = SLOT_FREE;
    st->cur = NULL;
  }
}

/* The read holding the next byte due becomes the current one. A short read
 * (the end of the file, or a file that changed) means the reads after it
 * assumed bytes that are not there: a new generation restarts after it. */
static struct slot *take_due(struct stream_op *st) {
  if (st->cur) return st->cur;
  for (unsigned i = 0; i < st->depth; i++) {
    struct slot *sl = &st->slots[i];
    if (sl->state != SLOT_READY || sl->gen != st->gen || sl->off != st->deliver_pos) continue;
    sl->state = SLOT_CURRENT;
    sl->used = 0;
    if (sl->result >= 0 && (size_t)sl->result < st->block) {
      st->gen++;
      st->read_pos = sl->off + sl->result;
    }
    return st->cur = sl;
  }
  return NULL;
}

static void issue(struct stream_op *st) {
  ascope_file *f = st->o.f;
  for (unsigned i = 0; i < st->depth && !st->stopping; i++) {
    struct slot *sl = &st->slots[i];
    if (sl->state != SLOT_FREE) continue;
    sl->off = st->read_pos;
    sl->gen = st->gen;
    sl->state = SLOT_BUSY;
    uv_buf_t b = uv_buf_init(sl->buf, (unsigned)st->block);
    /* A pipe has no offsets: it is read in order, one read at a time. */
    int rc = uv_fs_read(f->loop, &sl->req, f->fd, &b, 1, f->seekable ? sl->off : -1, on_slot);
    if (rc) {
      sl->state = SLOT_FREE;
      stop(st, rc);
      return;
    }
    st->inflight++;
    st->read_pos += (int64_t)st->block;
  }
}

/* Hands the caller one item and applies what its callback returns. */
static void item(struct stream_op *st, const char *data, size_t n) {
  st->in_cb = true;
  st->resume_asked = false;
  int ret = st->cb(st->o.s, 0, data, n, st->o.ud);
  st->in_cb = false;
  if (ret < 0)
    stop(st, ret);
  else if (ret == ASCOPE_STOP)
    stop(st, 0);
  else if (ret == ASCOPE_PAUSE && !st->resume_asked)
    st->paused = true;
}

/* The current read is all delivered: its slot may read again. */
static void slot_done(struct stream_op *st, struct slot *sl) {
  if (sl->used == (size_t)sl->result && st->cur == sl) {
    sl->state = SLOT_FREE;
    st->cur = NULL;
  }
}

/* Hands the caller the next chunk of the current read. */
static void deliver_chunk(struct stream_op *st, struct slot *sl) {
  if (sl->result <= 0) { /* an error, or the end of the file */
    stop(st, (int)sl->result);
    return;
  }
  size_t left = (size_t)sl->result - sl->used;
  size_t n = left < st->chunk ? left : st->chunk;
  const char *data = sl->buf + sl->used;
  sl->used += n;
  st->deliver_pos += (int64_t)n;
  item(st, data, n);
  slot_done(st, sl);
}

/* ---- lines ---------------------------------------------------------------- */

/* Fails the stream with UV_E2BIG and a message that says which line: the
 * status alone ("argument list too long") would not. */
static void too_long(struct stream_op *st) {
  if (st->stopping) return;
  char buf[96];
  snprintf(buf, sizeof buf, "line longer than %zu bytes at offset %lld", st->ln.max,
           (long long)st->ln.start);
  st->ln.reason = ascope_strdup(buf); /* NULL: the message falls back to the status's text */
  stop(st, UV_E2BIG);
}

/* Bytes a pending line may hold before its end is seen: max_line, and a \r
 * that may turn out to stand before the delimiter. */
static size_t carry_limit(const struct lines *ln) {
  return ln->max + (ln->crlf ? 1 : 0);
}

/* Appends to the carried line; false when the stream had to stop. Grows by
 * doubling, so files of short lines never allocate max_line bytes. */
static bool carry(struct stream_op *st, const char *p, size_t n) {
  struct lines *ln = &st->ln;
  if (ln->clen + n > ln->ccap) {
    size_t cap = ln->ccap ? ln->ccap * 2 : 256;
    if (cap < ln->clen + n) cap = ln->clen + n;
    if (cap > ln->max + 2) cap = ln->max + 2;
    char *c = ascope_realloc(ln->carry, cap);
    if (c == NULL) {
      stop(st, UV_ENOMEM);
      return false;
    }
    ln->carry = c;
    ln->ccap = cap;
  }
  memcpy(ln->carry + ln->clen, p, n);
  ln->clen += n;
  return true;
}

/* Hands the caller the next line, from where the current read was left.
 * A read that ends inside a line goes to the carry and the slot reads on;
 * the line is delivered from the read that holds its delimiter (or from the
 * end of the file). */
static void deliver_line(struct stream_op *st, struct slot *sl) {
  struct lines *ln = &st->ln;
  if (sl->result < 0) {
    stop(st, (int)sl->result);
    return;
  }
  if (sl->result == 0) { /* the end: a last line without a delimiter, then the end */
    if (ln->clen == 0) {
      stop(st, 0);
      return;
    }
    size_t n = ln->clen;
    if (n > ln->max) {
      too_long(st);
      return;
    }
    ln->clen = 0;
    item(st, ln->carry, n);
    return; /* the slot stays current: the next move ends the stream */
  }
  const char *p = sl->buf + sl->used;
  size_t left = (size_t)sl->result - sl->used;
  const char *d = memchr(p, ln->delim, left);
  size_t take = d ? (size_t)(d - p) + 1 : left; /* bytes of the read used up */
  /* Checked before anything is copied: an over-long line, however long,
   * costs no more memory than max_line. */
  if (ln->clen + take - (d ? 1 : 0) > carry_limit(ln)) {
    too_long(st);
    return;
  }
  sl->used += take;
  st->deliver_pos += (int64_t)take;
  if (d == NULL) {
    if (carry(st, p, take)) slot_done(st, sl);
    return;
  }
  const char *line = p;
  if (ln->clen) {
    if (!carry(st, p, take)) return;
    line = ln->carry;
    take = ln->clen;
    ln->clen = 0;
  }
  size_t n = take - 1; /* without the delimiter */
  if (ln->crlf && n > 0 && line[n - 1] == '\r') n--;
  if (n > ln->max) {
    too_long(st);
    return;
  }
  ln->start = st->deliver_pos;
  item(st, line, ln->keep_delim ? take : n);
  slot_done(st, sl);
}

static void deliver(struct stream_op *st, struct slot *sl) {
  if (st->ln.on)
    deliver_line(st, sl);
  else
    deliver_chunk(st, sl);
}

/* One move; false when the stream must wait for a read or a resume. */
static bool advance(struct stream_op *st) {
  if (st->o.cancelled) stop(st, ASCOPE_ECANCELED);
  reap(st);
  if (st->stopping || st->paused) return false;
  struct slot *sl = take_due(st);
  if (sl) {
    deliver(st, sl);
    return true;
  }
  issue(st);
  return st->stopping; /* a refused read: look again to finish */
}

/* The final call: no item, the end status. Its return is the op's. */
static void finish(struct stream_op *st) {
  st->o.ending = true;
  int status = st->end_status;
  int rc = st->cb(st->o.s, status, NULL, 0, st->o.ud);
  char *reason = st->ln.reason;
  ascope_free(st->mem);
  ascope_free(st->ln.carry);
  fop_end_reason(&st->o, rc, status, "read", reason);
  ascope_free(reason);
}

static void pump(struct stream_op *st) {
  if (st->in_pump) {
    st->repump = true;
    return;
  }
  st->in_pump = true;
  do {
    st->repump = false;
    while (advance(st)) {
    }
  } while (st->repump);
  st->in_pump = false;
  if (st->stopping && st->inflight == 0 && !st->o.ending) finish(st);
}

static void on_slot(uv_fs_t *req) {
  struct slot *sl = (struct slot *)((char *)req - offsetof(struct slot, req));
  struct stream_op *st = sl->st;
  sl->result = req->result;
  uv_fs_req_cleanup(req);
  sl->state = SLOT_READY;
  st->inflight--;
  pump(st);
}

static void stream_cancel(struct fop *o) {
  pump((struct stream_op *)o); /* sees o->cancelled */
}

static void stream_resume(ascope_op *op) {
  struct stream_op *st = ascope_op_data(op);
  if (st->o.ending || st->stopping) return;
  if (st->in_cb) st->resume_asked = true; /* beats the PAUSE about to be returned */
  if (!st->paused) return;
  st->paused = false;
  pump(st);
}

/* Allocates a stream of `depth` reads of `block` bytes and starts it at
 * offset. Returns what ascope_file_stream returns. */
static int stream_start(struct stream_op *st, ascope *s, ascope_file *f, size_t block,
                        int64_t offset, ascope_file_data_cb cb, void *ud, ascope_op **op_out) {
  int rc;
  st->depth = f->seekable ? DEPTH : 1;
  st->block = block;
  st->mem = ascope_malloc(st->depth * st->block);
  if (st->mem == NULL) {
    ascope_free(st);
    return UV_ENOMEM;
  }
  for (unsigned i = 0; i < st->depth; i++) {
    st->slots[i].st = st;
    st->slots[i].buf = st->mem + i * st->block;
  }
  st->cb = cb;
  st->read_pos = st->deliver_pos = st->ln.start = f->seekable ? offset : 0;
  if ((rc = fop_begin(&st->o, s, f, ud, stream_cancel))) {
    ascope_free(st->mem);
    ascope_free(st);
    return rc;
  }
  ascope_op_set_resume(st->o.op, stream_resume);
  if (op_out) *op_out = st->o.op;
  pump(st);
  return 0;
}

int ascope_file_stream(ascope *s, ascope_file *f, size_t chunk, int64_t offset,
                       ascope_file_data_cb cb, void *ud, ascope_op **op_out) {
  int rc = fop_check(s, f, FM_READ);
  if (rc) return rc;
  if (cb == NULL || chunk == 0 || chunk > MAX_CHUNK || offset < 0) return UV_EINVAL;
  struct stream_op *st = ascope_calloc(1, sizeof *st);
  if (st == NULL) return UV_ENOMEM;
  st->chunk = chunk;
  /* A pipe gives what it has: one read of one chunk at a time. */
  return stream_start(st, s, f, f->seekable ? block_for(chunk) : chunk, offset, cb, ud, op_out);
}

/* ---- line streams: options ------------------------------------------------- */

struct line_opts {
  unsigned char delim;
  int crlf; /* -1: not given, the delimiter decides */
  int keep_delim;
  uint64_t max, read_size, offset;
};

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* One byte, or an escape: a space, a tab and a comma separate options and
 * a NUL ends the string, so those can only be written escaped. */
static int parse_delim(const char *v, unsigned char *out) {
  if (v == NULL || v[0] == '\0') return UV_EINVAL;
  if (v[0] != '\\') {
    if (v[1]) return UV_EINVAL;
    *out = (unsigned char)v[0];
    return 0;
  }
  static const char from[] = "nrt0\\", to[] = "\n\r\t\0\\";
  const char *e = v[1] ? strchr(from, v[1]) : NULL;
  if (e && v[2] == '\0') {
    *out = (unsigned char)to[e - from];
    return 0;
  }
  if (v[1] == 'x' && hex_digit(v[2]) >= 0 && hex_digit(v[3]) >= 0 && v[4] == '\0') {
    *out = (unsigned char)(hex_digit(v[2]) * 16 + hex_digit(v[3]));
    return 0;
  }
  return UV_EINVAL;
}

static int parse_line_opts(const char *options, struct line_opts *lo) {
  *lo = (struct line_opts){
      .delim = '\n', .crlf = -1, .max = DEFAULT_MAX_LINE, .read_size = MIN_BLOCK};
  static const char *const keys[] = {"delim",    "crlf",      "keep_delim",
                                     "max_line", "read_size", "offset"};
  unsigned seen = 0;
  char buf[64], *key, *val;
  const char *p = options;
  while ((p = ascope_opt_next(p, buf, sizeof buf, &key, &val))) {
    unsigned k = 0;
    while (k < 6 && strcmp(key, keys[k])) k++;
    /* an unknown or repeated key is a mistake, not something to ignore */
    if (k == 6 || (seen & (1u << k)) || val == NULL) return UV_EINVAL;
    seen |= 1u << k;
    int rc = 0;
    switch (k) {
    case 0:
      rc = parse_delim(val, &lo->delim);
      break;
    case 1:
      rc = ascope_opt_bool(val, &lo->crlf);
      break;
    case 2:
      rc = ascope_opt_bool(val, &lo->keep_delim);
      break;
    case 3:
      rc = ascope_opt_uint(val, MAX_CHUNK, &lo->max);
      break;
    case 4:
      rc = ascope_opt_uint(val, MAX_CHUNK, &lo->read_size);
      break;
    default:
      rc = ascope_opt_uint(val, INT64_MAX, &lo->offset);
      break;
    }
    if (rc) return rc;
  }
  if (lo->max == 0 || lo->read_size == 0) return UV_EINVAL;
  if (lo->crlf < 0) lo->crlf = lo->delim == '\n';
  return 0;
}

size_t ascope_file_lines_memory(const char *options) {
  struct line_opts lo;
  if (parse_line_opts(options, &lo)) return 0;
  return DEPTH * (size_t)lo.read_size + (size_t)lo.max + 2;
}

int ascope_file_lines(ascope *s, ascope_file *f, const char *options, ascope_file_data_cb cb,
                      void *ud, ascope_op **op_out) {
  int rc = fop_check(s, f, FM_READ);
  if (rc) return rc;
  struct line_opts lo;
  if (cb == NULL || parse_line_opts(options, &lo)) return UV_EINVAL;
  struct stream_op *st = ascope_calloc(1, sizeof *st);
  if (st == NULL) return UV_ENOMEM;
  st->ln = (struct lines){.on = true,
                          .delim = lo.delim,
                          .crlf = lo.crlf,
                          .keep_delim = lo.keep_delim,
                          .max = (size_t)lo.max};
  /* read_size is used as given: a chunk stream rounds small chunks up to
   * 2 MiB reads because its items are read-sized, but a line stream's items
   * do not depend on the reads at all. */
  return stream_start(st, s, f, (size_t)lo.read_size, (int64_t)lo.offset, cb, ud, op_out);
}
