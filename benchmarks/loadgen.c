/*
 * loadgen.c -- single-threaded epoll load generator for the netloop benchmarks.
 *
 * Modes
 *   pingpong  N connections; each sends SIZE bytes, waits for the complete
 *             echo, verifies it and sends the next message.
 *   stream    N connections; each keeps SIZE bytes in flight (a sliding
 *             window) and verifies the echoed byte stream.  Reports MB/s.
 *   connrate  N concurrent workers; each connects, sends SIZE bytes, reads
 *             the echo, closes and starts over.  Reports connections/s.
 *   --idle K  opens K extra connections before the run (each does a single
 *             verified echo exchange so the server really holds them), then
 *             keeps them open and silent.  Works with every mode; with
 *             --conns 0 in pingpong mode it is a pure memory probe.
 *
 * Every echoed byte is compared with what was sent.  Payloads come from a
 * pseudo-random pattern at an offset that changes per connection and per
 * message, so a server that mixes up buffers or connections is caught.  With
 * --line every message ends with '\n' and contains no other newline.
 *
 * With --server-pid the server's CPU time (utime+stime from /proc/PID/stat)
 * is sampled exactly at the start and end of the measured window, and its
 * VmRSS is sampled before and after the idle connections are opened.
 *
 * Connections are closed with an RST by default (--close rst): see conn_close().
 *
 * --tls (a build with -DLOADGEN_TLS, linked with -lssl -lcrypto): every
 * connection does a full TLS handshake (no session resumption, no
 * certificate check) after connecting, then the same exchange through
 * OpenSSL.  In connrate mode each connection is a new handshake, so its rate
 * is handshakes per second.  The server's CPU is measured as without TLS.
 *
 * Output: one JSON object on stdout.  Diagnostics go to stderr.
 * Build:  cc -O2 -o loadgen loadgen.c -lm   (Linux only: epoll)
 *         cc -O2 -DLOADGEN_TLS -o loadgen loadgen.c -lm -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#ifdef LOADGEN_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#define LOADGEN_VERSION "3"
#define PERIOD 65521u          /* prime: pattern period                   */
#define CHUNK_MAX 65536u       /* largest single send / recv              */
#define HS_SIZE 64u            /* size of the set-up echo exchange        */
#define MAXEV 1024

enum mode { M_PINGPONG, M_STREAM, M_CONNRATE };
enum kind { K_ACTIVE, K_IDLE, K_WORKER };
/* S_TLS: TCP connected, TLS handshake in progress (--tls) */
enum state { S_FREE, S_CONNECTING, S_HANDSHAKE, S_READY, S_RUN, S_DEAD, S_TLS };
enum phase { P_SETUP_ACTIVE, P_SETUP_IDLE, P_SETTLE, P_WARMUP, P_MEASURE, P_DRAIN, P_DONE };

/* error classes */
enum { E_CONNECT, E_RESET, E_EOF, E_MISMATCH, E_EXCESS, E_IDLE, E_SETUP_TIMEOUT, E_OTHER, E_N };
static const char *err_names[E_N] = {"connect", "reset", "eof", "mismatch", "excess",
                                     "idle_disturbed", "setup_timeout", "other"};

struct conn {
    int fd;
    uint32_t gen;          /* bumps on every new socket: filters stale events */
    uint32_t id;
    uint8_t kind, state;
    uint32_t ev;           /* current epoll interest */
    uint64_t seq;
    /* message exchange (pingpong, handshake, connrate) */
    const unsigned char *msg;
    size_t msg_len, sent, recvd;
    uint64_t t_start;
    unsigned char *lbuf;   /* line mode: message copy ending in '\n' */
    /* stream */
    uint64_t s_sent, s_recvd;
    uint32_t s_off;
    uint64_t chunk_ts[8];
    void *ssl;             /* SSL * with --tls, else NULL */
};

/* ---- options ---- */
static const char *o_host = "127.0.0.1";
static const char *o_port = NULL;
static int o_mode = M_PINGPONG;
static long o_conns = 10, o_idle = 0, o_cpu = -1, o_batch = 256;
static size_t o_size = 64;
static size_t o_wsize = CHUNK_MAX; /* largest single send() (--write-size) */
static double o_duration = 5.0, o_warmup = 1.0, o_setup_timeout = 60.0, o_settle = 0.3,
              o_drain = 2.0;
static int o_line = 0;
static int o_close_rst = 1;       /* close with RST (no client TIME_WAIT) */
static int o_busy_poll = 1;       /* spin on epoll_wait(0) while measuring */
static uint64_t spin_idle_ns;     /* time spent in empty polls in the window */
static long o_server_pid = 0;
static int o_tls = 0;
#ifdef LOADGEN_TLS
static SSL_CTX *g_ssl_ctx;
#endif

/* ---- global state ---- */
static int ep = -1;
static struct addrinfo *g_addr;
static struct conn *conns;
static long nconns_total;
static unsigned char *pat;
static size_t pat_len;
static unsigned char *rbuf;
static int phase = P_SETUP_ACTIVE;
static uint64_t phase_deadline;
static long pending_connects, next_to_connect, setup_ready, setup_target, setup_first,
    setup_last;
static long active_alive, idle_ready, outstanding;
static uint64_t errors[E_N], errors_total_measure;
static uint64_t completed, completed_bytes;  /* within the measured window */
static uint64_t lifetime_completed;

/* histogram: ns, log-linear with 64 sub-buckets per power of two (<1.6% error) */
#define HBUCKETS 3840
static uint64_t hist[HBUCKETS];
static uint64_t hist_count, hist_max;
static double hist_sum;

static uint64_t t_measure0, t_measure1;
static double srv_cpu0_u, srv_cpu0_s, srv_cpu1_u, srv_cpu1_s;
static double cli_cpu0, cli_cpu1;
static double sys0[3], sys1[3];
static int sys_ok;
static long rss_before_idle = -1, rss_after_idle = -1, srv_hwm = -1, srv_rss_end = -1;
static int srv_ok = 0;
static char fatal_msg[256];

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "loadgen: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline int hindex(uint64_t v) {
    if (v < 128) return (int)v;
    int e = 63 - __builtin_clzll(v);               /* e >= 7 */
    return (e - 5) * 64 + (int)((v >> (e - 6)) & 63);
}

static double hvalue(int idx) {                    /* bucket midpoint, ns */
    if (idx < 128) return idx;
    int e = idx / 64 + 5, sub = idx % 64;
    double lo = (double)((uint64_t)(64 + sub) << (e - 6));
    return lo + (double)((uint64_t)1 << (e - 6)) / 2.0;
}

static inline void hrecord(uint64_t v) {
    int i = hindex(v);
    if (i >= HBUCKETS) i = HBUCKETS - 1;
    hist[i]++;
    hist_count++;
    hist_sum += (double)v;
    if (v > hist_max) hist_max = v;
}

static double hpercentile(double p) {
    if (!hist_count) return 0;
    uint64_t target = (uint64_t)ceil(p * (double)hist_count), cum = 0;
    if (target < 1) target = 1;
    for (int i = 0; i < HBUCKETS; i++) {
        cum += hist[i];
        if (cum >= target) {
            double v = hvalue(i);
            return v > (double)hist_max ? (double)hist_max : v;
        }
    }
    return (double)hist_max;
}

/* ---- /proc sampling of the server ---- */
static int read_proc_cpu(double *u, double *s) {
    char path[64], buf[2048];
    if (o_server_pid <= 0) return 0;
    snprintf(path, sizeof path, "/proc/%ld/stat", o_server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    p += 2;                                        /* at field 3 (state) */
    unsigned long long ut = 0, st = 0;
    for (int field = 3; field <= 15 && *p; field++) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (field == 14) ut = v;
        if (field == 15) st = v;
        p = strchr(p, ' ');
        if (!p) break;
        p++;
    }
    double hz = (double)sysconf(_SC_CLK_TCK);
    *u = (double)ut / hz;
    *s = (double)st / hz;
    return 1;
}

static long read_proc_status_kb(const char *key) {
    char path[64], line[256];
    size_t klen = strlen(key);
    long val = -1;
    if (o_server_pid <= 0) return -1;
    snprintf(path, sizeof path, "/proc/%ld/status", o_server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            val = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return val;
}

/* whole-machine CPU from /proc/stat, in seconds: [0]=user+nice+system [1]=irq+softirq [2]=steal */
static int read_sys_cpu(double out[3]) {
    char line[512];
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    char *ok = fgets(line, sizeof line, f);
    fclose(f);
    if (!ok || strncmp(line, "cpu ", 4) != 0) return 0;
    if (sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) < 8)
        return 0;
    double hz = (double)sysconf(_SC_CLK_TCK);
    out[0] = (double)(v[0] + v[1] + v[2]) / hz;
    out[1] = (double)(v[5] + v[6]) / hz;
    out[2] = (double)v[7] / hz;
    return 1;
}

static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ---- connection helpers ---- */
static inline uint64_t ev_key(struct conn *c) { return ((uint64_t)c->id << 32) | c->gen; }

static void set_events(struct conn *c, uint32_t ev) {
    if (c->ev == ev) return;
    struct epoll_event e = {.events = ev, .data.u64 = ev_key(c)};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) perror("loadgen: epoll_ctl MOD");
    c->ev = ev;
}

/* With --close rst (the default) every client socket is closed with an RST
   (SO_LINGER 0) instead of a FIN.  The side that sends the first FIN keeps a
   TIME_WAIT entry for 60 s; at 20,000+ connections/s, or after 10,000 idle
   connections, those fill the whole ephemeral port range, and then bind() to
   port 0 fails for every process on the machine.  Servers see ECONNRESET
   instead of EOF at the end of a connection. */
static void conn_close(struct conn *c) {
    if (c->fd >= 0 && o_close_rst) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    if (c->fd >= 0) close(c->fd);
#ifdef LOADGEN_TLS
    if (c->ssl) SSL_free((SSL *)c->ssl);
#endif
    c->ssl = NULL;
    c->fd = -1;
    c->gen++;
}

/* send()/recv() on the plain socket, or through TLS: the same return values
   and errno (EAGAIN when TLS must wait for the socket either way). */
static ssize_t io_send(struct conn *c, const void *buf, size_t len) {
#ifdef LOADGEN_TLS
    if (c->ssl) {
        int n = SSL_write((SSL *)c->ssl, buf, (int)len);
        if (n > 0) return n;
        int err = SSL_get_error((SSL *)c->ssl, n);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) errno = EAGAIN;
        else if (err == SSL_ERROR_SYSCALL && errno) {}
        else errno = EPIPE;
        return -1;
    }
#endif
    return send(c->fd, buf, len, MSG_NOSIGNAL);
}

static ssize_t io_recv(struct conn *c, void *buf, size_t len) {
#ifdef LOADGEN_TLS
    if (c->ssl) {
        int n = SSL_read((SSL *)c->ssl, buf, (int)len);
        if (n > 0) return n;
        int err = SSL_get_error((SSL *)c->ssl, n);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            errno = EAGAIN;
            return -1;
        }
        if (err == SSL_ERROR_ZERO_RETURN) return 0;
        if (err == SSL_ERROR_SYSCALL && errno == 0) return 0;
        if (err != SSL_ERROR_SYSCALL) errno = ECONNRESET;
        return -1;
    }
#endif
    return recv(c->fd, buf, len, 0);
}

static void start_connect(struct conn *c);
static void on_ready(struct conn *c, uint64_t now);

static long *restart_ids, *restart_tmp; /* connrate workers waiting for a new socket */
static long n_restart;

static void conn_fail(struct conn *c, int err_class, uint64_t now) {
    int was_setup = (c->state == S_CONNECTING || c->state == S_HANDSHAKE || c->state == S_TLS) &&
                    c->kind != K_WORKER;
    (void)now;
    errors[err_class]++;
    if (phase == P_MEASURE) errors_total_measure++;
    if (c->kind == K_ACTIVE && c->state == S_RUN) outstanding--;
    if (c->kind == K_WORKER && (c->state == S_CONNECTING || c->state == S_TLS || c->state == S_RUN))
        outstanding--;
    if (c->kind == K_ACTIVE && (c->state == S_READY || c->state == S_RUN)) active_alive--;
    if (c->kind == K_IDLE && c->state == S_READY) idle_ready--;
    conn_close(c);
    c->state = S_DEAD;
    if (was_setup) {
        pending_connects--;
        setup_ready++;     /* finished (failed): set-up progress goes on */
    }
    /* workers are restarted from the main loop (never recursively) */
    if (c->kind == K_WORKER) restart_ids[n_restart++] = c->id;
}

static void pick_message(struct conn *c, size_t len) {
    uint32_t off = (uint32_t)(((uint64_t)c->id * 7919u + c->seq * 104729u) % PERIOD);
    c->seq++;
    if (o_line) {
        memcpy(c->lbuf, pat + off, len - 1);
        c->lbuf[len - 1] = '\n';
        if (o_line > 1 && len >= (size_t)(2 * o_line)) {
            /* --lines N: N lines of len/N bytes (the last takes the remainder) */
            size_t seg = len / (size_t)o_line;
            for (int k = 1; k < o_line; k++) c->lbuf[k * seg - 1] = '\n';
        }
        c->msg = c->lbuf;
    } else {
        c->msg = pat + off;
    }
    c->msg_len = len;
    c->sent = c->recvd = 0;
}

/* send as much of the current message as possible */
static void msg_send(struct conn *c, uint64_t now) {
    while (c->sent < c->msg_len) {
        size_t want = c->msg_len - c->sent;
        if (want > o_wsize) want = o_wsize;
        ssize_t n = io_send(c, c->msg + c->sent, want);
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(c, EPOLLIN | EPOLLOUT);
            return;
        }
        if (n < 0 && errno == EINTR) continue;
        conn_fail(c, (errno == EPIPE || errno == ECONNRESET) ? E_RESET : E_OTHER, now);
        return;
    }
    set_events(c, EPOLLIN);
}

static void msg_start(struct conn *c, size_t len, uint64_t now) {
    pick_message(c, len);
    c->t_start = now;
    msg_send(c, now);
}

/* ---- stream mode ---- */
static void stream_fill(struct conn *c, uint64_t now) {
    for (;;) {
        uint64_t inflight = c->s_sent - c->s_recvd;
        if (inflight >= o_size || phase >= P_DRAIN) break;
        size_t want = (size_t)(o_size - inflight);
        if (want > o_wsize) want = o_wsize;
        /* record the start time of each SIZE-byte chunk */
        if (c->s_sent % o_size == 0) c->chunk_ts[(c->s_sent / o_size) & 7] = now;
        uint64_t to_boundary = o_size - c->s_sent % o_size;
        if (want > to_boundary) want = (size_t)to_boundary;
        const unsigned char *src = pat + (uint32_t)((c->s_off + c->s_sent) % PERIOD);
        ssize_t n = io_send(c, src, want);
        if (n > 0) {
            c->s_sent += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(c, EPOLLIN | EPOLLOUT);
            return;
        }
        if (n < 0 && errno == EINTR) continue;
        conn_fail(c, (errno == EPIPE || errno == ECONNRESET) ? E_RESET : E_OTHER, now);
        return;
    }
    set_events(c, EPOLLIN);
}

static void stream_read(struct conn *c, uint64_t now) {
    ssize_t n = io_recv(c, rbuf, CHUNK_MAX);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        conn_fail(c, errno == ECONNRESET ? E_RESET : E_OTHER, now);
        return;
    }
    if (n == 0) {
        conn_fail(c, E_EOF, now);
        return;
    }
    uint64_t inflight = c->s_sent - c->s_recvd;
    if ((uint64_t)n > inflight) {
        conn_fail(c, E_EXCESS, now);
        return;
    }
    const unsigned char *exp = pat + (uint32_t)((c->s_off + c->s_recvd) % PERIOD);
    if (memcmp(rbuf, exp, (size_t)n) != 0) {
        conn_fail(c, E_MISMATCH, now);
        return;
    }
    uint64_t before = c->s_recvd;
    c->s_recvd += (uint64_t)n;
    /* chunks completed by this read */
    uint64_t k0 = before / o_size, k1 = c->s_recvd / o_size;
    for (uint64_t k = k0; k < k1; k++) {
        if (phase == P_MEASURE) {
            hrecord(now - c->chunk_ts[k & 7]);
            completed++;
        }
        lifetime_completed++;
    }
    if (phase == P_MEASURE) completed_bytes += (uint64_t)n;
    if (phase >= P_DRAIN) {
        if (c->s_recvd == c->s_sent && c->state == S_RUN) {
            c->state = S_READY;
            outstanding--;
        }
        return;
    }
    stream_fill(c, now);
}

/* ---- message (pingpong/handshake/connrate) receive ---- */
static void msg_complete(struct conn *c, uint64_t now) {
    if (c->state == S_HANDSHAKE) {
        c->state = S_READY;
        pending_connects--;
        setup_ready++;
        if (c->kind == K_IDLE) idle_ready++;
        if (c->kind == K_ACTIVE) active_alive++;
        c->msg_len = 0;
        return;
    }
    if (phase == P_MEASURE) {
        hrecord(now - c->t_start);
        completed++;
        completed_bytes += c->msg_len;
    }
    lifetime_completed++;
    if (c->kind == K_WORKER) {
        conn_close(c);
        outstanding--;
        c->state = S_FREE;
        if (phase == P_WARMUP || phase == P_MEASURE) start_connect(c);
        return;
    }
    if (phase == P_WARMUP || phase == P_MEASURE) {
        msg_start(c, o_size, now);
    } else {
        c->state = S_READY;
        c->msg_len = 0;
        outstanding--;
    }
}

static void msg_read(struct conn *c, uint64_t now) {
    size_t room = CHUNK_MAX;
    ssize_t n = io_recv(c, rbuf, room);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        conn_fail(c, errno == ECONNRESET ? E_RESET : E_OTHER, now);
        return;
    }
    if (n == 0) {
        conn_fail(c, E_EOF, now);
        return;
    }
    if (c->msg_len == 0 || (size_t)n > c->msg_len - c->recvd || c->recvd + (size_t)n > c->sent) {
        conn_fail(c, c->kind == K_IDLE && c->state == S_READY ? E_IDLE : E_EXCESS, now);
        return;
    }
    if (memcmp(rbuf, c->msg + c->recvd, (size_t)n) != 0) {
        conn_fail(c, E_MISMATCH, now);
        return;
    }
    c->recvd += (size_t)n;
    if (c->recvd == c->msg_len) msg_complete(c, now);
}

/* ---- connecting ---- */
/* Create a socket and start connecting it.  Returns the fd (or -1);
   *status is 0 when already connected, 1 when the connection is in progress,
   -1 when socket() or connect() failed. */
static int open_and_connect(int *status) {
    int fd = socket(g_addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *status = -1;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, g_addr->ai_addr, g_addr->ai_addrlen);
    *status = r == 0 ? 0 : (errno == EINPROGRESS ? 1 : -1);
    return fd;
}

static void start_connect(struct conn *c) {
    uint64_t now = now_ns();
    int status;
    int fd = open_and_connect(&status);
    c->gen++;
    c->state = S_CONNECTING;
    c->msg_len = 0;
    c->t_start = now;
    if (c->kind == K_WORKER)
        outstanding++;
    else
        pending_connects++;
    c->fd = fd;
    if (fd < 0 || status < 0) {
        conn_fail(c, E_CONNECT, now);
        return;
    }
    c->ev = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.u64 = ev_key(c)};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) {
        conn_fail(c, E_OTHER, now);
        return;
    }
    if (status == 0) on_ready(c, now);
}

#ifdef LOADGEN_TLS
/* one step of the client handshake; on_ready() goes on once it is done */
static void tls_step(struct conn *c, uint64_t now) {
    int r = SSL_do_handshake((SSL *)c->ssl);
    if (r == 1) {
        on_ready(c, now);
        return;
    }
    int err = SSL_get_error((SSL *)c->ssl, r);
    ERR_clear_error();
    if (err == SSL_ERROR_WANT_READ) set_events(c, EPOLLIN);
    else if (err == SSL_ERROR_WANT_WRITE) set_events(c, EPOLLOUT);
    else conn_fail(c, E_CONNECT, now);
}
#endif

static void on_ready(struct conn *c, uint64_t now) {       /* TCP (and TLS) connected */
#ifdef LOADGEN_TLS
    if (o_tls && c->ssl == NULL) {
        SSL *ssl = SSL_new(g_ssl_ctx);
        if (ssl == NULL || SSL_set_fd(ssl, c->fd) != 1) {
            if (ssl) SSL_free(ssl);
            conn_fail(c, E_OTHER, now);
            return;
        }
        SSL_set_connect_state(ssl);
        c->ssl = ssl;
        c->state = S_TLS;
        tls_step(c, now);
        return;
    }
#endif
    set_events(c, EPOLLIN);
    if (c->kind == K_WORKER) {
        c->state = S_RUN;
        uint64_t t0 = c->t_start;                 /* latency includes connect */
        msg_start(c, o_size, now);
        c->t_start = t0;
    } else {
        c->state = S_HANDSHAKE;
        /* set-up echo exchange (ends in '\n' in line mode, like every message) */
        msg_start(c, o_size < HS_SIZE ? o_size : HS_SIZE, now);
    }
}

static void handle_event(struct epoll_event *e, uint64_t now) {
    uint32_t id = (uint32_t)(e->data.u64 >> 32), gen = (uint32_t)e->data.u64;
    if (id >= (uint32_t)nconns_total) return;
    struct conn *c = &conns[id];
    if (c->gen != gen || c->fd < 0) return;                 /* stale event */
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err) {
            conn_fail(c, E_CONNECT, now);
            return;
        }
        if (!(e->events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        on_ready(c, now);
        return;
    }
#ifdef LOADGEN_TLS
    if (c->state == S_TLS) {
        tls_step(c, now);
        return;
    }
#endif
    if (c->kind == K_IDLE && c->state == S_READY) {
        /* an idle connection must stay silent: any event is an error */
        char b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        conn_fail(c, n == 0 ? E_EOF : E_IDLE, now);
        return;
    }
    if (o_mode == M_STREAM && c->kind == K_ACTIVE && c->state == S_RUN) {
        if (e->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) stream_read(c, now);
        if (c->fd >= 0 && c->gen == gen && (e->events & EPOLLOUT) && phase < P_DRAIN)
            stream_fill(c, now);
        return;
    }
    if (c->state == S_READY) {
        /* active connection between phases: server must not send */
        char b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        conn_fail(c, n == 0 ? E_EOF : E_EXCESS, now);
        return;
    }
    if (e->events & EPOLLOUT) {
        msg_send(c, now);
        if (c->fd < 0 || c->gen != gen) return;
    }
    if (e->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) msg_read(c, now);
}

/* ---- phases ---- */
static void begin_setup(long first, long last, uint64_t now) {
    setup_first = first;
    setup_last = last;
    setup_target = last - first;
    setup_ready = 0;
    pending_connects = 0;
    next_to_connect = first;
    phase_deadline = now + (uint64_t)(o_setup_timeout * 1e9);
}

/* keep up to --connect-batch set-up connections in progress (iterative) */
static void pump_setup(void) {
    if (phase != P_SETUP_ACTIVE && phase != P_SETUP_IDLE) return;
    while (next_to_connect < setup_last && pending_connects < o_batch)
        start_connect(&conns[next_to_connect++]);
}

static void pump_restarts(void) {
    /* take the current list; failures during this pass queue up afresh */
    long n = n_restart;
    if (n == 0) return;
    memcpy(restart_tmp, restart_ids, (size_t)n * sizeof *restart_ids);
    n_restart = 0;
    for (long i = 0; i < n; i++) {
        struct conn *c = &conns[restart_tmp[i]];
        if (phase == P_WARMUP || phase == P_MEASURE)
            start_connect(c);
        else
            c->state = S_DEAD;
    }
}

static void enter_warmup(uint64_t now) {
    phase = P_WARMUP;
    phase_deadline = now + (uint64_t)(o_warmup * 1e9);
    for (long i = 0; i < o_conns; i++) {
        struct conn *c = &conns[i];
        if (o_mode == M_CONNRATE) {
            restart_ids[n_restart++] = c->id;   /* started by pump_restarts() */
            continue;
        }
        if (c->state != S_READY) continue;
        c->state = S_RUN;
        outstanding++;
        if (o_mode == M_STREAM)
            stream_fill(c, now);
        else
            msg_start(c, o_size, now);
    }
}

static void enter_measure(uint64_t now) {
    (void)now;
    phase = P_MEASURE;
    memset(hist, 0, sizeof hist);
    hist_count = hist_max = 0;
    hist_sum = 0;
    completed = completed_bytes = 0;
    srv_ok = read_proc_cpu(&srv_cpu0_u, &srv_cpu0_s);
    cli_cpu0 = self_cpu();
    sys_ok = read_sys_cpu(sys0);
    t_measure0 = now_ns();
    phase_deadline = t_measure0 + (uint64_t)(o_duration * 1e9);
}

static void enter_drain(uint64_t now) {
    (void)now;
    t_measure1 = now_ns();
    if (srv_ok) srv_ok = read_proc_cpu(&srv_cpu1_u, &srv_cpu1_s);
    cli_cpu1 = self_cpu();
    if (sys_ok) sys_ok = read_sys_cpu(sys1);
    phase = P_DRAIN;
    phase_deadline = t_measure1 + (uint64_t)(o_drain * 1e9);
    /* stream connections whose window is already empty are done */
    if (o_mode == M_STREAM) {
        for (long i = 0; i < o_conns; i++) {
            struct conn *c = &conns[i];
            if (c->state == S_RUN && c->s_recvd == c->s_sent) {
                c->state = S_READY;
                outstanding--;
            }
        }
    }
}

static void advance(uint64_t now) {
    for (;;) {
        switch (phase) {
        case P_SETUP_ACTIVE:
        case P_SETUP_IDLE:
            if (setup_ready >= setup_target || now >= phase_deadline) {
                if (setup_ready < setup_target) {
                    long missing = 0;
                    for (long i = setup_first; i < setup_last; i++) {
                        struct conn *c = &conns[i];
                        if (c->state == S_CONNECTING || c->state == S_HANDSHAKE ||
                            c->state == S_TLS || c->state == S_FREE) {
                            conn_close(c);
                            c->state = S_DEAD;
                            missing++;
                        }
                    }
                    errors[E_SETUP_TIMEOUT] += (uint64_t)missing;
                    fprintf(stderr, "loadgen: set-up timed out, %ld connections missing\n",
                            missing);
                }
                if (phase == P_SETUP_ACTIVE) {
                    if (o_mode != M_CONNRATE && o_conns > 0 && active_alive == 0) {
                        snprintf(fatal_msg, sizeof fatal_msg,
                                 "no active connection could be established");
                        phase = P_DONE;
                        return;
                    }
                    rss_before_idle = read_proc_status_kb("VmRSS");
                    phase = P_SETUP_IDLE;
                    begin_setup(o_conns, nconns_total, now);
                    continue;
                }
                phase = P_SETTLE;
                phase_deadline = now + (uint64_t)((o_idle > 0 ? o_settle : 0) * 1e9);
                continue;
            }
            return;
        case P_SETTLE:
            if (now >= phase_deadline) {
                if (o_idle > 0) rss_after_idle = read_proc_status_kb("VmRSS");
                if (o_conns == 0) {     /* pure memory probe: nothing to run */
                    t_measure0 = t_measure1 = now;
                    phase = P_DONE;
                    return;
                }
                enter_warmup(now);
                if (o_warmup <= 0) enter_measure(now);
                continue;
            }
            return;
        case P_WARMUP:
            if (now >= phase_deadline) {
                enter_measure(now);
                continue;
            }
            return;
        case P_MEASURE:
            if (now >= phase_deadline) {
                enter_drain(now);
                continue;
            }
            return;
        case P_DRAIN:
            if (outstanding <= 0 || now >= phase_deadline) {
                phase = P_DONE;
            }
            return;
        default:
            return;
        }
    }
}

/* ---- output ---- */
static void print_json(void) {
    double dur = (t_measure1 > t_measure0) ? (double)(t_measure1 - t_measure0) / 1e9 : 0.0;
    uint64_t errs = 0;
    for (int i = 0; i < E_N; i++) errs += errors[i];
    const char *mode = o_mode == M_PINGPONG ? "pingpong" : o_mode == M_STREAM ? "stream" : "connrate";
    double rps = dur > 0 ? (double)completed / dur : 0;
    double mbps = dur > 0 ? (double)completed_bytes / dur / 1e6 : 0;
    double rate = o_mode == M_STREAM ? mbps : rps;
    const char *unit = o_mode == M_STREAM ? "MB/s" : o_mode == M_CONNRATE ? "conn/s" : "req/s";
    srv_hwm = read_proc_status_kb("VmHWM");
    srv_rss_end = read_proc_status_kb("VmRSS");

    printf("{\"loadgen_version\": \"%s\", \"mode\": \"%s\", \"line\": %s, \"host\": \"%s\", "
           "\"port\": %s, \"conns\": %ld, \"idle\": %ld, \"size\": %zu, \"close\": \"%s\", ",
           LOADGEN_VERSION, mode, o_line ? "true" : "false", o_host, o_port, o_conns, o_idle,
           o_size, o_close_rst ? "rst" : "fin");
    printf("\"lines_per_msg\": %d, \"write_size\": %zu, ", o_line, o_wsize);
    printf("\"warmup_s\": %.3f, \"duration_s\": %.6f, \"rate\": %.3f, \"rate_unit\": \"%s\", ",
           o_warmup, dur, rate, unit);
    printf("\"requests\": %llu, \"requests_per_s\": %.3f, \"bytes\": %llu, \"mb_per_s\": %.3f, ",
           (unsigned long long)completed, rps, (unsigned long long)completed_bytes, mbps);
    if (o_mode == M_CONNRATE) printf("\"conns_per_s\": %.3f, ", rps);
    printf("\"latency_us\": {\"count\": %llu, \"mean\": %.2f, \"p50\": %.2f, \"p90\": %.2f, "
           "\"p99\": %.2f, \"p999\": %.2f, \"max\": %.2f}, ",
           (unsigned long long)hist_count, hist_count ? hist_sum / (double)hist_count / 1e3 : 0.0,
           hpercentile(0.50) / 1e3, hpercentile(0.90) / 1e3, hpercentile(0.99) / 1e3,
           hpercentile(0.999) / 1e3, (double)hist_max / 1e3);
    printf("\"errors\": %llu, \"errors_in_window\": %llu, \"error_detail\": {",
           (unsigned long long)errs, (unsigned long long)errors_total_measure);
    for (int i = 0; i < E_N; i++)
        printf("%s\"%s\": %llu", i ? ", " : "", err_names[i], (unsigned long long)errors[i]);
    printf("}, \"active_alive\": %ld, \"idle_ready\": %ld, ", active_alive, idle_ready);
    {
        /* with --busy-poll the client never sleeps; busy_util leaves out the empty polls */
        double cpu = cli_cpu1 - cli_cpu0, idle = (double)spin_idle_ns / 1e9;
        double busy = o_busy_poll ? cpu - idle : cpu;
        if (busy < 0) busy = 0;
        printf("\"client\": {\"cpu_s\": %.3f, \"cpu_util\": %.4f, \"busy_poll\": %s, "
               "\"busy_util\": %.4f}, ",
               cpu, dur > 0 ? cpu / dur : 0.0, o_busy_poll ? "true" : "false",
               dur > 0 ? busy / dur : 0.0);
    }
    printf("\"server\": {\"pid\": %ld", o_server_pid);
    if (srv_ok && dur > 0) {
        double u = srv_cpu1_u - srv_cpu0_u, s = srv_cpu1_s - srv_cpu0_s;
        printf(", \"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f, \"cpu_util\": %.4f", u, s,
               (u + s) / dur);
        if (completed)
            printf(", \"cpu_us_per_op\": %.4f", (u + s) * 1e6 / (double)completed);
        if (completed_bytes)
            printf(", \"cpu_us_per_mb\": %.3f", (u + s) * 1e6 / ((double)completed_bytes / 1e6));
    }
    if (rss_before_idle >= 0) printf(", \"rss_before_idle_kb\": %ld", rss_before_idle);
    if (rss_after_idle >= 0) printf(", \"rss_after_idle_kb\": %ld", rss_after_idle);
    if (rss_before_idle >= 0 && rss_after_idle >= 0 && idle_ready > 0)
        printf(", \"rss_per_idle_conn_bytes\": %.1f",
               (double)(rss_after_idle - rss_before_idle) * 1024.0 / (double)idle_ready);
    if (srv_rss_end >= 0) printf(", \"rss_end_kb\": %ld", srv_rss_end);
    if (srv_hwm >= 0) printf(", \"vmhwm_kb\": %ld", srv_hwm);
    printf("}");
    if (sys_ok && dur > 0) {
        /* CPU used by everything else on the machine during the window: noise indicator */
        double srv = srv_ok ? (srv_cpu1_u - srv_cpu0_u) + (srv_cpu1_s - srv_cpu0_s) : 0.0;
        double other = (sys1[0] - sys0[0]) - srv - (cli_cpu1 - cli_cpu0);
        if (other < 0) other = 0;
        printf(", \"system\": {\"ncpu_online\": %ld, \"other_cpu_util\": %.4f, "
               "\"irq_softirq_util\": %.4f, \"steal_util\": %.4f}",
               sysconf(_SC_NPROCESSORS_ONLN), other / dur, (sys1[1] - sys0[1]) / dur,
               (sys1[2] - sys0[2]) / dur);
    }
    if (fatal_msg[0]) printf(", \"fatal\": \"%s\"", fatal_msg);
    printf("}\n");
    fflush(stdout);
}

/* ---- main ---- */
static void usage(FILE *f) {
    fprintf(f,
            "usage: loadgen --port P [options]\n"
            "  --host H            server address (default 127.0.0.1; ::1 works)\n"
            "  --port P            server port (required)\n"
            "  --mode M            pingpong | stream | connrate (default pingpong)\n"
            "  --conns N           active connections / connrate workers (default 10)\n"
            "  --size S            message size; stream: bytes in flight (default 64)\n"
            "  --duration D        measured seconds (default 5)\n"
            "  --warmup W          warm-up seconds before measuring (default 1)\n"
            "  --idle K            extra silent connections opened first (default 0)\n"
            "  --line              messages end in '\\n' and contain no other newline\n"
            "  --lines N           line mode with N lines per message (each message\n"
            "                      is N lines of size/N bytes, sent as one write)\n"
            "  --server-pid PID    sample server CPU time and RSS from /proc\n"
            "  --cpu N             pin this process to CPU N\n"
            "  --connect-batch B   max connections being set up at once (default 256)\n"
            "  --setup-timeout T   seconds allowed for each set-up phase (default 60)\n"
            "  --settle T          seconds to wait after idle set-up before RSS (default 0.3)\n"
            "  --drain-timeout T   seconds to wait for in-flight echoes (default 2)\n"
            "  --close rst|fin     how the client closes connections (default rst: no\n"
            "                      TIME_WAIT left behind; fin: orderly close)\n"
            "  --busy-poll 0|1     spin on epoll_wait(0) during warm-up and measurement\n"
            "                      instead of sleeping (default 1; needs its own CPU)\n"
            "  --tls               speak TLS (full handshake per connection; a build with\n"
            "                      -DLOADGEN_TLS only)\n"
            "  --write-size W      largest single send() in bytes (default and max 65536)\n");
}

static double parse_double(const char *s, const char *name) {
    char *end;
    double v = strtod(s, &end);
    if (*end || v < 0) die("bad value for %s", name);
    return v;
}

static long parse_long(const char *s, const char *name) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0) die("bad value for %s", name);
    return v;
}

int main(int argc, char **argv) {
    static struct option opts[] = {
        {"host", required_argument, 0, 'h'},     {"port", required_argument, 0, 'p'},
        {"mode", required_argument, 0, 'm'},     {"conns", required_argument, 0, 'c'},
        {"size", required_argument, 0, 's'},     {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},   {"idle", required_argument, 0, 'i'},
        {"line", no_argument, 0, 'l'},           {"lines", required_argument, 0, 'L'},           {"server-pid", required_argument, 0, 'P'},
        {"cpu", required_argument, 0, 'C'},      {"connect-batch", required_argument, 0, 'b'},
        {"setup-timeout", required_argument, 0, 'T'}, {"settle", required_argument, 0, 'S'},
        {"drain-timeout", required_argument, 0, 'D'}, {"help", no_argument, 0, 'H'},
        {"close", required_argument, 0, 'K'},      {"busy-poll", required_argument, 0, 'B'},
        {"tls", no_argument, 0, 'E'},
        {"write-size", required_argument, 0, 'W'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': o_host = optarg; break;
        case 'p': o_port = optarg; break;
        case 'm':
            if (!strcmp(optarg, "pingpong")) o_mode = M_PINGPONG;
            else if (!strcmp(optarg, "stream")) o_mode = M_STREAM;
            else if (!strcmp(optarg, "connrate")) o_mode = M_CONNRATE;
            else die("unknown mode %s", optarg);
            break;
        case 'c': o_conns = parse_long(optarg, "--conns"); break;
        case 's': o_size = (size_t)parse_long(optarg, "--size"); break;
        case 'd': o_duration = parse_double(optarg, "--duration"); break;
        case 'w': o_warmup = parse_double(optarg, "--warmup"); break;
        case 'i': o_idle = parse_long(optarg, "--idle"); break;
        case 'l': if (!o_line) o_line = 1; break;
        case 'L': o_line = (int)parse_long(optarg, "--lines"); break;
        case 'P': o_server_pid = parse_long(optarg, "--server-pid"); break;
        case 'C': o_cpu = parse_long(optarg, "--cpu"); break;
        case 'b': o_batch = parse_long(optarg, "--connect-batch"); break;
        case 'T': o_setup_timeout = parse_double(optarg, "--setup-timeout"); break;
        case 'S': o_settle = parse_double(optarg, "--settle"); break;
        case 'D': o_drain = parse_double(optarg, "--drain-timeout"); break;
        case 'K':
            if (!strcmp(optarg, "rst")) o_close_rst = 1;
            else if (!strcmp(optarg, "fin")) o_close_rst = 0;
            else die("--close must be rst or fin, not %s", optarg);
            break;
        case 'B': o_busy_poll = parse_long(optarg, "--busy-poll") ? 1 : 0; break;
        case 'E': o_tls = 1; break;
        case 'W': o_wsize = (size_t)parse_long(optarg, "--write-size"); break;
        case 'H': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!o_port) {
        usage(stderr);
        return 2;
    }
    if (o_size < 1 || o_size > (64u << 20)) die("--size must be 1..64MiB%s", "");
    if (o_wsize < 1 || o_wsize > CHUNK_MAX) die("--write-size must be 1..65536%s", "");
    if (o_line && o_size < 2) die("--line needs --size >= 2%s", "");
    if (o_line < 0 || (o_line > 1 && o_size < (size_t)(2 * o_line)))
        die("--lines N needs N >= 1 and --size >= 2N%s", "");
    if (o_mode != M_PINGPONG && o_conns < 1) die("--conns must be >= 1 for this mode%s", "");
    if (o_batch < 1) o_batch = 1;
    signal(SIGPIPE, SIG_IGN);
    if (o_tls) {
#ifdef LOADGEN_TLS
        g_ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (g_ssl_ctx == NULL) die("cannot make a TLS context%s", "");
        SSL_CTX_set_verify(g_ssl_ctx, SSL_VERIFY_NONE, NULL);
        /* every connection a full handshake: no session is kept for resumption */
        SSL_CTX_set_session_cache_mode(g_ssl_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_mode(g_ssl_ctx,
                         SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#else
        die("--tls: this loadgen was built without TLS (-DLOADGEN_TLS -lssl -lcrypto)%s", "");
#endif
    }

    if (o_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((int)o_cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0) perror("loadgen: sched_setaffinity");
    }

    nconns_total = o_conns + o_idle;
    struct rlimit rl;
    rlim_t need = (rlim_t)nconns_total + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
        struct rlimit nrl = rl;
        nrl.rlim_cur = need;
        if (nrl.rlim_max != RLIM_INFINITY && nrl.rlim_max < need) nrl.rlim_max = need;
        if (setrlimit(RLIMIT_NOFILE, &nrl) < 0) {
            nrl.rlim_cur = rl.rlim_max;
            nrl.rlim_max = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &nrl);
            fprintf(stderr, "loadgen: could not raise RLIMIT_NOFILE to %lu (hard %lu)\n",
                    (unsigned long)need, (unsigned long)rl.rlim_max);
        }
    }

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    int gai = getaddrinfo(o_host, o_port, &hints, &g_addr);
    if (gai) die("cannot resolve address: %s", gai_strerror(gai));

    /* pattern: xorshift bytes; in line mode no byte is '\n' */
    size_t maxmsg = o_size > CHUNK_MAX ? o_size : CHUNK_MAX;
    pat_len = PERIOD + maxmsg + HS_SIZE;
    pat = malloc(pat_len);
    rbuf = malloc(CHUNK_MAX);
    conns = calloc((size_t)(nconns_total ? nconns_total : 1), sizeof *conns);
    restart_ids = calloc((size_t)(o_conns ? o_conns : 1), sizeof *restart_ids);
    restart_tmp = calloc((size_t)(o_conns ? o_conns : 1), sizeof *restart_tmp);
    if (!pat || !rbuf || !conns || !restart_ids || !restart_tmp) die("out of memory%s", "");
    /* the buffer is periodic (pat[i] == pat[i % PERIOD]) so that any slice is
       the byte stream at that offset, even across the wrap */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < pat_len; i++) {
        if (i >= PERIOD) {
            pat[i] = pat[i - PERIOD];
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned char b = (unsigned char)(x >> 56);
        if (o_line && b == '\n') b = 'N';
        pat[i] = b;
    }
    for (long i = 0; i < nconns_total; i++) {
        struct conn *c = &conns[i];
        c->fd = -1;
        c->id = (uint32_t)i;
        c->kind = i < o_conns ? (o_mode == M_CONNRATE ? K_WORKER : K_ACTIVE) : K_IDLE;
        c->s_off = (uint32_t)(((uint64_t)i * 7919u) % PERIOD);
        if (o_line) {
            c->lbuf = malloc(o_size > HS_SIZE ? o_size : HS_SIZE);
            if (!c->lbuf) die("out of memory%s", "");
        }
    }

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1 failed%s", "");
    struct epoll_event *evs = calloc(MAXEV, sizeof *evs);

    uint64_t now = now_ns();
    if (o_mode == M_CONNRATE)
        begin_setup(0, 0, now);           /* workers start with the warm-up */
    else
        begin_setup(0, o_conns, now);
    advance(now);

    while (phase != P_DONE) {
        pump_setup();
        pump_restarts();
        now = now_ns();
        int timeout = 0;
        int spinning = o_busy_poll && (phase == P_WARMUP || phase == P_MEASURE);
        if (spinning) {
            timeout = 0;
        } else if (n_restart > 0) {
            timeout = 1;                /* back off briefly after failed connects */
        } else if (phase_deadline > now) {
            uint64_t ms = (phase_deadline - now + 999999) / 1000000;
            timeout = ms > 1000 ? 1000 : (int)ms;
        }
        int n = epoll_wait(ep, evs, MAXEV, timeout);
        if (spinning && n == 0) {
            if (phase == P_MEASURE) spin_idle_ns += now_ns() - now;
            advance(now_ns());
            continue;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("loadgen: epoll_wait");
            snprintf(fatal_msg, sizeof fatal_msg, "epoll_wait failed");
            break;
        }
        for (int i = 0; i < n; i++) handle_event(&evs[i], now_ns());
        advance(now_ns());
    }
    if (t_measure1 == 0 && t_measure0 != 0) {   /* stopped early */
        t_measure1 = now_ns();
        if (srv_ok) srv_ok = read_proc_cpu(&srv_cpu1_u, &srv_cpu1_s);
        cli_cpu1 = self_cpu();
    }
    print_json();
    for (long i = 0; i < nconns_total; i++) conn_close(&conns[i]);
    return fatal_msg[0] ? 1 : 0;
}
