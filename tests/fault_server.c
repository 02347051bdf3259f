/* tests/fault_server: a small HTTP/1.1 server that misbehaves on purpose,
 * for the HTTP driver's tests. It listens on 127.0.0.1 (free ports) and
 * writes "<port> <mute_port>\n" to --port-file once ready.
 *
 *   /echo            the request body back (X-Method: the method)
 *   /headers         the request head back
 *   /status/N        status N
 *   /slow/MS         waits MS, then answers
 *   /hang            never answers
 *   /close           closes without a word
 *   /cut             Content-Length 1000, sends 100 bytes, closes
 *   /cut-chunked     one chunk, then closes mid-body
 *   /long-length     Content-Length 1000, sends 10 bytes, stays open
 *   /short-length    Content-Length 5, sends more
 *   /never           a chunk every 200 ms, forever
 *   /stall           one chunk, then silence
 *   /garbage         not HTTP at all
 *   /chunked/N       N bytes in chunks, length not announced
 *   /big-header/N    a header line of N bytes
 *   /many-headers/N  N bytes of headers in lines of 1 KiB
 *
 * The mute port accepts connections and never says anything: a TLS
 * handshake against it hangs, which is how connect timeouts are tested. */
#include <uv.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_REQUEST (128u << 20)

typedef struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  char *buf;
  size_t len, cap;
  int closing;
  int busy; /* a response in progress: parse nothing more */
  int ticks;
  int keep_alive;
} conn;

static uv_loop_t *loop;

/* ---- writing ---------------------------------------------------------------- */

typedef struct wreq {
  uv_write_t req;
  int close_after;
  char data[];
} wreq;

static void conn_close(conn *c);

static void on_written(uv_write_t *w, int status) {
  wreq *r = (wreq *)w;
  conn *c = w->handle->data;
  if (status == 0 && r->close_after) conn_close(c);
  free(r);
}

static void send_raw(conn *c, const void *data, size_t len, int close_after) {
  if (c->closing) return;
  wreq *r = malloc(sizeof *r + len);
  if (r == NULL) abort();
  memcpy(r->data, data, len);
  r->close_after = close_after;
  uv_buf_t b = uv_buf_init(r->data, (unsigned)len);
  if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) free(r);
}

static void send_str(conn *c, const char *s) {
  send_raw(c, s, strlen(s), 0);
}

static void respond(conn *c, int status, const char *extra, const void *body, size_t len) {
  char head[512];
  int n = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                   len, extra ? extra : "", c->keep_alive ? "" : "Connection: close\r\n");
  char *all = malloc((size_t)n + len);
  if (all == NULL) abort();
  memcpy(all, head, (size_t)n);
  if (len) memcpy(all + n, body, len);
  send_raw(c, all, (size_t)n + len, !c->keep_alive);
  free(all);
  c->busy = 0;
}

/* ---- connections ------------------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->closing == 0) {
    free(c->buf);
    free(c);
  }
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 2;
  uv_close((uv_handle_t *)&c->timer, on_closed);
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void tick_never(uv_timer_t *t) {
  conn *c = t->data;
  send_str(c, "5\r\ntick\n\r\n");
}

static void tick_slow(uv_timer_t *t) {
  conn *c = t->data;
  respond(c, 200, NULL, "slow\n", 5);
}

/* ---- parsing a request ------------------------------------------------------- */

static const char *header(const char *head, const char *name, char *out, size_t cap) {
  size_t n = strlen(name);
  for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
    const char *line = p + 2;
    if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
      const char *v = line + n + 1;
      while (*v == ' ') v++;
      size_t len = strcspn(v, "\r");
      if (len >= cap) len = cap - 1;
      memcpy(out, v, len);
      out[len] = '\0';
      return out;
    }
  }
  return NULL;
}

/* Decodes a chunked body in place from src; returns the bytes consumed, 0
 * if incomplete, -1 if malformed. */
static long dechunk(char *src, size_t len, size_t *body_len) {
  size_t in = 0, out = 0;
  for (;;) {
    char *nl = memchr(src + in, '\n', len - in);
    if (nl == NULL) return 0;
    char *end;
    unsigned long n = strtoul(src + in, &end, 16);
    if (end == src + in) return -1;
    size_t data = (size_t)(nl - src) + 1;
    if (n == 0) {
      char *fin = memchr(src + data, '\n', len - data);
      if (fin == NULL) return 0;
      *body_len = out;
      return (long)(fin - src) + 1;
    }
    if (data + n + 2 > len) return 0;
    memmove(src + out, src + data, n);
    out += n;
    in = data + n + 2;
  }
}

static void route(conn *c, const char *method, const char *path, const char *head, char *body,
                  size_t blen) {
  char extra[128];
  long arg = 0;
  if (!strcmp(path, "/echo")) {
    snprintf(extra, sizeof extra, "X-Method: %s\r\n", method);
    respond(c, 200, extra, body, blen);
  } else if (!strcmp(path, "/headers")) {
    respond(c, 200, NULL, head, strlen(head));
  } else if (sscanf(path, "/status/%ld", &arg) == 1) {
    respond(c, (int)arg, NULL, "status\n", 7);
  } else if (sscanf(path, "/slow/%ld", &arg) == 1) {
    uv_timer_start(&c->timer, tick_slow, (uint64_t)arg, 0);
  } else if (!strcmp(path, "/hang")) {
    /* stays busy: nothing more is answered on this connection */
  } else if (!strcmp(path, "/close")) {
    conn_close(c);
  } else if (!strcmp(path, "/cut")) {
    static char part[100];
    memset(part, 'c', sizeof part);
    send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    send_raw(c, part, sizeof part, 1);
  } else if (!strcmp(path, "/cut-chunked")) {
    send_str(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abc");
    send_raw(c, "", 0, 1);
  } else if (!strcmp(path, "/long-length")) {
    send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
  } else if (!strcmp(path, "/short-length")) {
    send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA-BYTES-BEYOND-THE-LENGTH");
    c->busy = 0;
  } else if (!strcmp(path, "/never") || !strcmp(path, "/stall")) {
    send_str(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ntick\n\r\n");
    if (path[1] == 'n') uv_timer_start(&c->timer, tick_never, 200, 200);
  } else if (!strcmp(path, "/garbage")) {
    send_str(c, "THIS IS NOT HTTP\r\n\r\n");
    send_raw(c, "", 0, 1);
  } else if (sscanf(path, "/chunked/%ld", &arg) == 1) {
    static char block[16384];
    memset(block, 'z', sizeof block);
    send_str(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (long left = arg; left > 0;) {
      long n = left < (long)sizeof block ? left : (long)sizeof block;
      char sz[32];
      snprintf(sz, sizeof sz, "%lx\r\n", (unsigned long)n);
      send_str(c, sz);
      send_raw(c, block, (size_t)n, 0);
      send_str(c, "\r\n");
      left -= n;
    }
    send_str(c, "0\r\n\r\n");
    c->busy = 0;
  } else if (sscanf(path, "/big-header/%ld", &arg) == 1 ||
             sscanf(path, "/many-headers/%ld", &arg) == 1) {
    /* Lines of "X-Big-<i>: hhh...", each 1 KiB with its CRLF, or one of N. */
    size_t line = path[1] == 'b' ? (size_t)arg : 1024, total = (size_t)arg;
    char *h = malloc(total + 64);
    if (h == NULL) abort();
    size_t n = 0;
    for (int i = 0; n + 32 < total; i++) {
      size_t end = n + line < total ? n + line : total;
      n += (size_t)sprintf(h + n, "X-Big-%d: ", i);
      while (n < end - 2) h[n++] = 'h';
      h[n++] = '\r';
      h[n++] = '\n';
    }
    send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
    send_raw(c, h, n, 0);
    send_str(c, "\r\nok");
    free(h);
    c->busy = 0;
  } else {
    respond(c, 404, NULL, "not found\n", 10);
  }
}

/* Handles every complete request in the buffer, in order. */
static void parse(conn *c) {
  while (!c->busy && !c->closing) {
    if (c->len == 0) return;
    char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
    if (end == NULL) return;
    size_t head_len = (size_t)(end - c->buf) + 4;
    char *head = malloc(head_len + 1);
    memcpy(head, c->buf, head_len);
    head[head_len] = '\0';
    char method[32], path[1024], v[64];
    if (sscanf(head, "%31s %1023s", method, path) != 2) {
      free(head);
      conn_close(c);
      return;
    }
    size_t blen = 0, used = head_len;
    char *body = c->buf + head_len;
    if (header(head, "Expect", v, sizeof v) && !strcasecmp(v, "100-continue") && c->len == head_len)
      send_str(c, "HTTP/1.1 100 Continue\r\n\r\n");
    if (header(head, "Transfer-Encoding", v, sizeof v) && strstr(v, "chunked")) {
      long n = dechunk(body, c->len - head_len, &blen);
      if (n == 0) { /* incomplete: the decode is redone from scratch */
        free(head);
        return;
      }
      if (n < 0) {
        free(head);
        conn_close(c);
        return;
      }
      used += (size_t)n;
    } else if (header(head, "Content-Length", v, sizeof v)) {
      blen = strtoul(v, NULL, 10);
      if (c->len < head_len + blen) {
        free(head);
        return;
      }
      used += blen;
    }
    c->keep_alive = !(header(head, "Connection", v, sizeof v) && !strcasecmp(v, "close"));
    c->busy = 1;
    /* The body is copied out: decoding chunks rewrote the buffer. */
    char *copy = malloc(blen + 1);
    memcpy(copy, body, blen);
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
    route(c, method, path, head, copy, blen);
    free(copy);
    free(head);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  conn *c = h->data;
  if (c->cap - c->len < suggested) {
    size_t cap = c->cap ? c->cap : 65536;
    while (cap - c->len < suggested) cap *= 2;
    c->buf = realloc(c->buf, cap);
    if (c->buf == NULL) abort();
    c->cap = cap;
  }
  *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  conn *c = s->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)n;
  if (c->len > MAX_REQUEST) {
    conn_close(c);
    return;
  }
  parse(c);
}

static void on_mute_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  conn *c = s->data;
  c->len = 0; /* read and forget */
  if (n < 0) conn_close(c);
}

static void accept_conn(uv_stream_t *server, uv_read_cb read_cb) {
  conn *c = calloc(1, sizeof *c);
  if (c == NULL) abort();
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, read_cb);
}

static void on_conn(uv_stream_t *server, int status) {
  if (status == 0) accept_conn(server, on_read);
}

static void on_mute_conn(uv_stream_t *server, int status) {
  if (status == 0) accept_conn(server, on_mute_read);
}

static int listen_on(uv_tcp_t *t, uv_connection_cb cb) {
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_init(loop, t);
  if (uv_tcp_bind(t, (const struct sockaddr *)&addr, 0) || uv_listen((uv_stream_t *)t, 512, cb))
    return -1;
  struct sockaddr_in got;
  int len = sizeof got;
  uv_tcp_getsockname(t, (struct sockaddr *)&got, &len);
  return ntohs(got.sin_port);
}

int main(int argc, char **argv) {
  const char *port_file = NULL;
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--port-file") && i + 1 < argc) port_file = argv[++i];
  signal(SIGPIPE, SIG_IGN); /* clients hang up mid-answer on purpose */
  loop = uv_default_loop();
  uv_tcp_t server, mute;
  int port = listen_on(&server, on_conn), mute_port = listen_on(&mute, on_mute_conn);
  if (port < 0 || mute_port < 0) {
    fprintf(stderr, "fault_server: cannot listen\n");
    return 1;
  }
  if (port_file) {
    /* Written whole under another name, then renamed: a reader never sees
     * half a line. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%d %d\n", port, mute_port) < 0 || fclose(f) != 0 ||
        rename(tmp, port_file) != 0) {
      perror("fault_server: port file");
      return 1;
    }
  } else {
    printf("%d %d\n", port, mute_port);
    fflush(stdout);
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}
