/* Intrusive circular lists (libuv's QUEUE, spelled out): one copy for the
 * core and the in-tree drivers, which include it as "../../core/queue.h".
 * Not installed and not part of any ABI: an out-of-tree driver brings its
 * own lists. */
#ifndef ASCOPE_QUEUE_H
#define ASCOPE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

struct aq {
  struct aq *next, *prev;
};
static inline void aq_init(struct aq *q) {
  q->next = q->prev = q;
}
static inline bool aq_empty(const struct aq *q) {
  return q->next == q;
}
/* Appends n at the tail of the list head. */
static inline void aq_push(struct aq *head, struct aq *n) {
  n->next = head;
  n->prev = head->prev;
  head->prev->next = n;
  head->prev = n;
}
/* Unlinks n and leaves it an empty list of its own, so removing it twice is
 * harmless. */
static inline void aq_remove(struct aq *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  aq_init(n);
}
#define aq_data(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

#endif
