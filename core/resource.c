/* The driver side: resources and operations. */
#include "internal.h"

void res_fini(void *obj) {
  ascope_res *r = obj;
  ascope__free(r->state);
  ascope__free(r->optbuf);
}

ascope_res *res_new(ascope_rt *rt, const ascope_driver *drv, const void *arg) {
  ascope_res *r = cache_get(&rt->res);
  if (r == NULL) return NULL;
  /* Never hand out a NULL state: ascope_resource() uses NULL for "not held". */
  size_t need = drv->state_size ? drv->state_size : 1;
  if (need > r->state_cap) {
    void *p = ascope__realloc(r->state, need);
    if (p == NULL) {
      cache_put(&rt->res, r);
      return NULL;
    }
    r->state = p;
    r->state_cap = need;
  }
  memset(r->state, 0, need);
  r->rt = rt;
  r->scope = NULL;
  r->drv = drv;
  r->arg = arg;
  r->options = NULL;
  r->phase = RES_IDLE;
  r->cancel_called = false;
  r->lent = NULL;
  r->member = NULL;
  return r;
}

void *ascope_res_state(ascope_res *r) {
  return r ? r->state : NULL;
}

ascope_rt *ascope_res_rt(ascope_res *r) {
  return r ? r->rt : NULL;
}

ascope *ascope_res_scope(ascope_res *r) {
  return r ? r->scope : NULL;
}

void ascope_res_done(ascope_res *r, int status, const char *code, const char *message) {
  if (r == NULL) return;
  ascope_rt *rt = r->rt;
  rt_enter(rt);
  if (r->member)
    pool_member_done(r, status > 0 ? 0 : status, code, message);
  else
    scope_res_done(r, status > 0 ? 0 : status, code, message);
  rt_leave(rt);
}

ascope_op *ascope_op_begin(ascope *s, const ascope_driver *drv, void (*cancel)(ascope_op *op),
                           void *data) {
  if (s == NULL || s->state != S_BODY || s->status) return NULL;
  ascope_op *op = cache_get(&s->rt->ops);
  if (op == NULL) {
    /* The driver will report ASCOPE_ECANCELED; the scope must say why. */
    rt_enter(s->rt);
    scope_fail(s, UV_ENOMEM, drv ? drv->name : NULL, NULL, "out of memory starting an operation");
    rt_leave(s->rt);
    return NULL;
  }
  op->scope = s;
  op->drv = drv;
  op->cancel = cancel;
  op->resume = NULL;
  op->data = data;
  op->id = ++s->rt->next_op_id;
  aq_push(&s->ops, &op->node);
  s->nops++;
  s->rt->stats.ops++;
  s->rt->stats.ops_live++;
  if (OBSERVED(s->rt)) trace_op(op, ASCOPE_TRACE_OP_BEGIN, 0);
  return op;
}

void *ascope_op_data(ascope_op *op) {
  return op ? op->data : NULL;
}

ascope *ascope_op_scope(ascope_op *op) {
  return op ? op->scope : NULL;
}

void ascope_op_set_resume(ascope_op *op, void (*resume)(ascope_op *op)) {
  if (op) op->resume = resume;
}

int ascope_op_resume(ascope_op *op) {
  if (op == NULL) return UV_EINVAL;
  if (op->resume == NULL) return UV_ENOTSUP;
  op->resume(op);
  return 0;
}

int ascope_op_cancel(ascope_op *op) {
  if (op == NULL) return UV_EINVAL;
  void (*cancel)(ascope_op *) = op->cancel;
  if (cancel == NULL) return UV_ENOTSUP;
  /* Cleared first: the driver's cancel may end the operation at once, and
   * a later cancel of the whole scope must not reach it a second time. */
  op->cancel = NULL;
  ascope_rt *rt = op->scope->rt;
  rt_enter(rt);
  cancel(op);
  rt_leave(rt);
  return 0;
}

void ascope_op_end(ascope_op *op, int status, const char *code, const char *message) {
  if (op == NULL) return;
  ascope *s = op->scope;
  ascope_rt *rt = s->rt;
  const char *driver = op->drv ? op->drv->name : NULL;
  rt_enter(rt);
  rt->stats.ops_live--;
  if (OBSERVED(rt)) trace_op(op, ASCOPE_TRACE_OP_END, status < 0 ? status : 0);
  aq_remove(&op->node);
  s->nops--;
  cache_put(&rt->ops, op);
  /* Positive values are flow-control codes, meaningless at the end. */
  if (status < 0) scope_fail(s, status, driver, code, message);
  scope_kick(s);
  rt_leave(rt);
}
