/* The runtime: a libuv loop (its own or the caller's), the run queue that
 * moves scopes, and the one thread-safe entry, ascope_rt_post(). */
#include "internal.h"

static void on_idle(uv_idle_t *h);
static void on_async(uv_async_t *h);

ascope_rt *ascope_rt_new(uv_loop_t *loop) {
  ascope_rt *rt = ascope__malloc(sizeof *rt);
  if (rt == NULL) return NULL;
  memset(rt, 0, sizeof *rt);
  if (loop == NULL) {
    if (uv_loop_init(&rt->own_loop) != 0) goto fail;
    rt->owns_loop = true;
    loop = &rt->own_loop;
  }
  rt->loop = loop;
  if (uv_mutex_init(&rt->post_mu) != 0) goto fail_loop;
  if (uv_async_init(loop, &rt->async, on_async) != 0) goto fail_mutex;
  rt->async.data = rt;
  /* Referenced only while scopes are pending: an idle runtime never keeps
   * the caller's loop alive. */
  uv_unref((uv_handle_t *)&rt->async);
  uv_idle_init(loop, &rt->idle);
  rt->idle.data = rt;
  rt->release_timeout_ms = 30000;
  cache_init(&rt->scopes, sizeof(ascope), scope_fini);
  cache_init(&rt->res, sizeof(ascope_res), res_fini);
  cache_init(&rt->ops, sizeof(ascope_op), NULL);
  cache_init(&rt->errs, sizeof(struct ascope_err), err_fini);
  ascope__runtime_count(+1);
  return rt;
fail_mutex:
  uv_mutex_destroy(&rt->post_mu);
fail_loop:
  if (rt->owns_loop) uv_loop_close(&rt->own_loop);
fail:
  ascope__free(rt);
  return NULL;
}

uv_loop_t *ascope_rt_loop(ascope_rt *rt) {
  return rt ? rt->loop : NULL;
}

int ascope_rt_set_release_timeout(ascope_rt *rt, uint64_t ms) {
  if (rt == NULL) return UV_EINVAL;
  rt->release_timeout_ms = ms;
  return 0;
}

int ascope_rt_run(ascope_rt *rt) {
  if (rt == NULL) return UV_EINVAL;
  if (aguard_busy(&rt->in) || rt->freeing) return ASCOPE_EBUSY; /* libuv loops do not nest */
  if (rt->pending == 0) {
    /* Deliver what other threads posted. With nothing pending the async
     * handle is unreferenced, and libuv does not iterate a loop without a
     * referenced handle: reference it for this one iteration. */
    uv_ref((uv_handle_t *)&rt->async);
    uv_run(rt->loop, UV_RUN_NOWAIT);
    if (rt->pending == 0) {
      uv_unref((uv_handle_t *)&rt->async);
      return 0;
    }
    /* a post started a scope: run it like any other */
  }
  while (rt->pending) uv_run(rt->loop, UV_RUN_ONCE);
  return 0;
}

/* ---- teardown ----------------------------------------------------------- */

static void rt_destroy(ascope_rt *rt) {
  rt_states_fini(rt); /* every scope ended, every handle closed: no driver needs them now */
  cache_destroy(&rt->scopes);
  cache_destroy(&rt->res);
  cache_destroy(&rt->ops);
  cache_destroy(&rt->errs);
  ascope__free(rt->posts);
  ascope__free(rt->posts_spare);
  uv_mutex_destroy(&rt->post_mu);
  ascope__runtime_count(-1);
  ascope__free(rt);
}

static void on_closed(uv_handle_t *h) {
  ascope_rt *rt = h->data;
  /* On the caller's loop, the last close callback is the runtime's end. */
  if (--rt->closing == 0 && !rt->owns_loop) rt_destroy(rt);
}

static void close_handle(ascope_rt *rt, uv_handle_t *h, void *data) {
  h->data = data;
  rt->closing++;
  uv_close(h, on_closed);
}

int ascope_rt_free(ascope_rt *rt) {
  if (rt == NULL) return UV_EINVAL;
  if (rt->freeing) return ASCOPE_ECLOSED;
  if (rt->pending || aguard_busy(&rt->in) || rt->npools) return ASCOPE_EBUSY;
  rt->freeing = true;
  trace_rt_free(rt);
  close_handle(rt, (uv_handle_t *)&rt->async, rt);
  close_handle(rt, (uv_handle_t *)&rt->idle, rt);
  for (struct aq *q = rt->scopes.all.next; q != &rt->scopes.all; q = q->next) {
    ascope *s = (ascope *)aq_data(q, struct cache_obj, all);
    if (s->timer_inited) close_handle(rt, (uv_handle_t *)&s->timer, rt);
  }
  if (rt->owns_loop) {
    uv_run(&rt->own_loop, UV_RUN_DEFAULT);
    uv_loop_close(&rt->own_loop);
    rt_destroy(rt);
  }
  return 0;
}

/* ---- the run queue ------------------------------------------------------ */

void rt_pending(ascope_rt *rt, int delta) {
  if (delta > 0 && rt->pending++ == 0) uv_ref((uv_handle_t *)&rt->async);
  if (delta < 0 && --rt->pending == 0) uv_unref((uv_handle_t *)&rt->async);
}

void rt_enqueue(ascope_rt *rt, ascope *s) {
  if (s->queued) return;
  s->queued = true;
  s->runq_next = NULL;
  if (rt->runq_tail)
    rt->runq_tail->runq_next = s;
  else
    rt->runq_head = s;
  rt->runq_tail = s;
  /* Outside the core nobody will drain: the next loop iteration does. */
  if (!aguard_busy(&rt->in) && !uv_is_active((uv_handle_t *)&rt->idle))
    uv_idle_start(&rt->idle, on_idle);
}

static void rt_drain(ascope_rt *rt) {
  ascope *s;
  while ((s = rt->runq_head) != NULL) {
    rt->runq_head = s->runq_next;
    if (rt->runq_head == NULL) rt->runq_tail = NULL;
    s->queued = false;
    scope_step(s);
  }
}

void rt_enter(ascope_rt *rt) {
  aguard_enter(&rt->in);
}

void rt_leave(ascope_rt *rt) {
  if (aguard_outermost(&rt->in)) rt_drain(rt); /* still inside: what it runs only queues */
  aguard_leave(&rt->in);
}

void rt_leave_user(ascope_rt *rt) {
  if (aguard_leave(&rt->in) && rt->runq_head && !uv_is_active((uv_handle_t *)&rt->idle))
    uv_idle_start(&rt->idle, on_idle);
}

static void on_idle(uv_idle_t *h) {
  ascope_rt *rt = h->data;
  rt_enter(rt);
  rt_leave(rt);
  if (rt->runq_head == NULL) uv_idle_stop(&rt->idle);
}

/* ---- posts from other threads ------------------------------------------- */

int ascope_rt_post(ascope_rt *rt, void (*fn)(void *ud), void *ud) {
  if (rt == NULL || fn == NULL) return UV_EINVAL;
  uv_mutex_lock(&rt->post_mu);
  if (rt->nposts == rt->posts_cap) {
    size_t cap = rt->posts_cap ? rt->posts_cap * 2 : 64;
    struct post *p = ascope__realloc(rt->posts, cap * sizeof *p);
    if (p == NULL) {
      uv_mutex_unlock(&rt->post_mu);
      return UV_ENOMEM;
    }
    rt->posts = p;
    rt->posts_cap = cap;
  }
  rt->posts[rt->nposts++] = (struct post){fn, ud};
  uv_mutex_unlock(&rt->post_mu);
  /* uv_async_send coalesces: one wake-up may carry many posts, and a post
   * made while on_async runs triggers another call, so none is lost. */
  return uv_async_send(&rt->async);
}

static void on_async(uv_async_t *h) {
  ascope_rt *rt = h->data;
  uv_mutex_lock(&rt->post_mu);
  struct post *batch = rt->posts;
  size_t n = rt->nposts, cap = rt->posts_cap;
  rt->posts = rt->posts_spare;
  rt->posts_cap = rt->spare_cap;
  rt->nposts = 0;
  rt->posts_spare = batch;
  rt->spare_cap = cap;
  uv_mutex_unlock(&rt->post_mu);
  rt_enter(rt);
  for (size_t i = 0; i < n; i++) batch[i].fn(batch[i].ud);
  rt_leave(rt);
}
