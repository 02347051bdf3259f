/* Replies: read through functions, so the public header holds no layout.
 * An ascope_redis_reply is hiredis's redisReply, or a deep copy of one the
 * driver keeps while a stream is paused. */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(ASCOPE_REDIS_STRING == REDIS_REPLY_STRING &&
                   ASCOPE_REDIS_ARRAY == REDIS_REPLY_ARRAY &&
                   ASCOPE_REDIS_INTEGER == REDIS_REPLY_INTEGER &&
                   ASCOPE_REDIS_NIL == REDIS_REPLY_NIL &&
                   ASCOPE_REDIS_STATUS == REDIS_REPLY_STATUS &&
                   ASCOPE_REDIS_ERROR == REDIS_REPLY_ERROR,
               "the public reply types are hiredis's");

#define R(x) ((const redisReply *)(x))

int ascope_redis_reply_type(const ascope_redis_reply *reply) {
  return reply ? R(reply)->type : 0;
}

long long ascope_redis_reply_integer(const ascope_redis_reply *reply) {
  return reply && R(reply)->type == REDIS_REPLY_INTEGER ? R(reply)->integer : 0;
}

const char *ascope_redis_reply_str(const ascope_redis_reply *reply, size_t *len) {
  int t = reply ? R(reply)->type : 0;
  bool has = t == REDIS_REPLY_STRING || t == REDIS_REPLY_STATUS || t == REDIS_REPLY_ERROR;
  if (len) *len = has ? R(reply)->len : 0;
  return has ? R(reply)->str : NULL;
}

size_t ascope_redis_reply_elements(const ascope_redis_reply *reply) {
  return reply && R(reply)->type == REDIS_REPLY_ARRAY ? R(reply)->elements : 0;
}

const ascope_redis_reply *ascope_redis_reply_element(const ascope_redis_reply *reply, size_t i) {
  if (i >= ascope_redis_reply_elements(reply)) return NULL;
  return (const ascope_redis_reply *)R(reply)->element[i];
}

redisReply *rd_reply_dup(const redisReply *r) {
  redisReply *d = ascope_calloc(1, sizeof *d);
  if (d == NULL) return NULL;
  d->type = r->type;
  d->integer = r->integer;
  if (r->str) {
    if ((d->str = ascope_malloc(r->len + 1)) == NULL) goto oom;
    memcpy(d->str, r->str, r->len);
    d->str[r->len] = '\0';
    d->len = r->len;
  }
  if (r->type == REDIS_REPLY_ARRAY && r->elements) {
    if ((d->element = ascope_calloc(r->elements, sizeof *d->element)) == NULL) goto oom;
    d->elements = r->elements;
    for (size_t i = 0; i < r->elements; i++)
      if ((d->element[i] = rd_reply_dup(r->element[i])) == NULL) goto oom;
  }
  return d;
oom:
  rd_reply_free(d);
  return NULL;
}

void rd_reply_free(redisReply *r) {
  if (r == NULL) return;
  for (size_t i = 0; r->element && i < r->elements; i++) rd_reply_free(r->element[i]);
  ascope_free(r->element);
  ascope_free(r->str);
  ascope_free(r);
}

/* ---- the reader's objects ----------------------------------------------------------
 * hiredis's own make a string reply in two allocations (the object, then
 * its bytes) and an array in two (the object, then its element pointers);
 * these make each in one, the bytes or the pointers right after the
 * object, which a pipelined GET or SET pays once per reply. They are the
 * reader's objects, made while hiredis parses and freed by it through
 * freeObject: plain malloc, as hiredis's are (a failure is the reader's
 * "out of memory", which closes the connection). */

static void *link_to_parent(const redisReadTask *task, redisReply *r) {
  if (task->parent) ((redisReply *)task->parent->obj)->element[task->idx] = r;
  return r;
}

static redisReply *new_reply(int type, size_t extra) {
  redisReply *r = malloc(sizeof *r + extra);
  if (r) *r = (redisReply){.type = type};
  return r;
}

static void *make_string(const redisReadTask *task, char *str, size_t len) {
  redisReply *r = new_reply(task->type, len + 1);
  if (r == NULL) return NULL;
  r->str = (char *)(r + 1);
  memcpy(r->str, str, len);
  r->str[len] = '\0';
  r->len = len;
  return link_to_parent(task, r);
}

static void *make_array(const redisReadTask *task, int elements) {
  size_t n = elements > 0 ? (size_t)elements : 0;
  redisReply *r = new_reply(REDIS_REPLY_ARRAY, n * sizeof(redisReply *));
  if (r == NULL) return NULL;
  r->elements = n;
  if (n) {
    r->element = (redisReply **)(r + 1);
    memset(r->element, 0, n * sizeof(redisReply *)); /* a parse cut short frees what is there */
  }
  return link_to_parent(task, r);
}

static void *make_integer(const redisReadTask *task, long long value) {
  redisReply *r = new_reply(REDIS_REPLY_INTEGER, 0);
  if (r == NULL) return NULL;
  r->integer = value;
  return link_to_parent(task, r);
}

static void *make_nil(const redisReadTask *task) {
  redisReply *r = new_reply(REDIS_REPLY_NIL, 0);
  return r ? link_to_parent(task, r) : NULL;
}

static void free_object(void *obj) {
  redisReply *r = obj;
  if (r == NULL) return;
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
    free_object(r->element[i]);
  free(r);
}

redisReplyObjectFunctions rd_reply_fns = {
    .createString = make_string,
    .createArray = make_array,
    .createInteger = make_integer,
    .createNil = make_nil,
    .freeObject = free_object,
};

void rd_error_code(const redisReply *r, char *code, size_t cap) {
  size_t n = 0;
  while (n < r->len && n + 1 < cap && isupper((unsigned char)r->str[n])) n++;
  if (n == 0 || (n < r->len && r->str[n] != ' ')) {
    snprintf(code, cap, "ERR");
    return;
  }
  memcpy(code, r->str, n);
  code[n] = '\0';
}

void rd_op_end(ascope_op *op, int rc, const redisReply *reply) {
  if (rc < 0 && reply && reply->type == REDIS_REPLY_ERROR) {
    char code[32];
    rd_error_code(reply, code, sizeof code);
    ascope_op_end(op, rc, code, reply->str);
    return;
  }
  ascope_op_end(op, rc, NULL, NULL);
}
