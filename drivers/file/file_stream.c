/* The file stream: the `async for chunk in file`.
 *
 * A stream owns DEPTH read buffers ("slots") of `block` bytes (the chunk, or
 * a multiple of it of at least 2 MiB) and keeps a read in flight in each free
 * one, so the threadpool reads ahead while the caller handles a chunk. Reads
 * may finish out of order (several threadpool threads); they are delivered
 * strictly in file order, by matching a slot's offset with the next byte due,
 * and cut into chunks. A short read (the end of the file, or a file changing
 * underneath) restarts the reads after the bytes it did return: the reads
 * already in flight belong to an older generation and are dropped when they
 * come back.
 *
 * Memory is the slots and nothing else: however long the file and however
 * long the caller pauses, the stream holds DEPTH * block bytes
 * (ascope_file_stream_memory). While paused it starts no reads; the ones in
 * flight land in their slots and wait.
 *
 * pump() is the one place that moves the stream. A user callback may re-enter
 * it (resume, or a cancel through ascope_fail); in_pump turns that into
 * "look again" instead of recursion.
 */
#include "file_internal.h"

#define DEPTH 2              /* reads in flight: one runs while the caller works */
#define MIN_BLOCK (2u << 20) /* smaller chunks are cut from reads of this size */
#define MAX_CHUNK (1u << 30)

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

/* Hands the caller the next chunk of the current read. */
static void deliver(struct stream_op *st, struct slot *sl) {
  if (sl->result <= 0) { /* an error, or the end of the file */
    stop(st, (int)sl->result);
    return;
  }
  size_t left = (size_t)sl->result - sl->used;
  size_t n = left < st->chunk ? left : st->chunk;
  const char *data = sl->buf + sl->used;
  sl->used += n;
  st->deliver_pos += (int64_t)n;
  st->in_cb = true;
  st->resume_asked = false;
  int ret = st->cb(st->o.s, 0, data, n, st->o.ud);
  st->in_cb = false;
  if (sl->used == (size_t)sl->result && st->cur == sl) {
    sl->state = SLOT_FREE;
    st->cur = NULL;
  }
  if (ret < 0)
    stop(st, ret);
  else if (ret == ASCOPE_STOP)
    stop(st, 0);
  else if (ret == ASCOPE_PAUSE && !st->resume_asked)
    st->paused = true;
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
  free(st->mem);
  fop_end(&st->o, rc, status, "read");
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

int ascope_file_stream(ascope *s, ascope_file *f, size_t chunk, int64_t offset,
                       ascope_file_data_cb cb, void *ud, ascope_op **op_out) {
  int rc = fop_check(s, f, FM_READ);
  if (rc) return rc;
  if (cb == NULL || chunk == 0 || chunk > MAX_CHUNK || offset < 0) return UV_EINVAL;
  struct stream_op *st = calloc(1, sizeof *st);
  if (st == NULL) return UV_ENOMEM;
  /* A pipe gives what it has: one read of one chunk at a time. */
  st->depth = f->seekable ? DEPTH : 1;
  st->block = f->seekable ? block_for(chunk) : chunk;
  st->mem = malloc(st->depth * st->block);
  if (st->mem == NULL) {
    free(st);
    return UV_ENOMEM;
  }
  for (unsigned i = 0; i < st->depth; i++) {
    st->slots[i].st = st;
    st->slots[i].buf = st->mem + i * st->block;
  }
  st->cb = cb;
  st->chunk = chunk;
  st->read_pos = st->deliver_pos = f->seekable ? offset : 0;
  if ((rc = fop_begin(&st->o, s, f, ud, stream_cancel))) {
    free(st->mem);
    free(st);
    return rc;
  }
  ascope_op_set_resume(st->o.op, stream_resume);
  if (op_out) *op_out = st->o.op;
  pump(st);
  return 0;
}
