/* Closed-loop load client for bench_serve.py: one thread, epoll, loopback only.
 *
 *   epoll_echo_client pingpong --port P [--host 127.0.0.1] [--conns 100] [--size 64]
 *                              [--warmup 1] [--duration 5]
 *   epoll_echo_client idle     --port P [--conns 100] [--duration 2]
 *   epoll_echo_client storm    --port P [--conns 5000] [--parallel 500] [--sources 16]
 *                              [--timeout 30]
 *
 * Every mode prints {"event": "measuring"} on stdout when its measured window
 * starts (so the caller can sample the server's CPU time), then one JSON line
 * with the results, and exits 0 (1 on setup errors, with a message on stderr).
 *
 * pingpong: each connection sends `size` bytes of its own pattern, waits until
 *   all `size` come back (checking every piece: wrong bytes, or bytes meant for
 *   another connection, count as mismatches), and sends again at once: a
 *   closed loop, so the rate measures the server, not an arrival schedule.
 *   Latency per round trip (send -> last byte back) goes into a log-linear
 *   histogram (1/128 relative precision, i.e. < 0.8 % error, constant memory),
 *   printed as non-empty buckets so runs can be merged exactly. After the
 *   result line, round trips in flight are let finish (up to 1 s) before
 *   closing, so the server sees a clean EOF, not a reset.
 * idle: connects `conns` sockets, proves each with a 1-byte echo, then sits
 *   idle for `duration` seconds; a good server uses ~0 CPU meanwhile.
 * storm: opens `conns` connections as fast as it can with at most `parallel`
 *   in flight; each is proven by a 1-byte echo, then closed by us (so TIME_WAIT
 *   lands here, not on the server). Source addresses rotate over 127.0.0.2 ..
 *   127.0.0.(1+sources) with IP_BIND_ADDRESS_NO_PORT, so repeated storms do not
 *   run out of ephemeral ports for one (src, dst) pair.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ------------------------------------------------------------------ helpers */
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fail(const char *what) {
    fprintf(stderr, "epoll_echo_client: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Log-linear histogram of nanoseconds: values < 256 are exact; above, each
 * power of two is split into 128 buckets. 64 ranges x 128 covers any uint64. */
#define SUB 128
#define HBUCKETS (64 * SUB)
struct hist { uint64_t count[HBUCKETS]; uint64_t total, sum, max; };

static int hbucket(uint64_t v) {
    if (v < 2 * SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);          /* >= 8 */
    int shift = msb - 7;                        /* keep the top 8 bits */
    return (shift + 1) * SUB + (int)((v >> shift) - SUB);
}
static uint64_t hvalue(int b) {                 /* midpoint of bucket b */
    if (b < 2 * SUB) return (uint64_t)b;
    int shift = b / SUB - 1;
    uint64_t lo = ((uint64_t)(b % SUB) + SUB) << shift;
    return lo + ((1ull << shift) >> 1);
}
static void hrecord(struct hist *h, uint64_t v) {
    h->count[hbucket(v)]++; h->total++; h->sum += v; if (v > h->max) h->max = v;
}
static double hpct_us(const struct hist *h, double pct) {
    if (!h->total) return 0.0;
    uint64_t want = (uint64_t)(pct / 100.0 * (double)h->total + 0.5);
    if (want < 1) want = 1;
    uint64_t seen = 0;
    for (int b = 0; b < HBUCKETS; b++) {
        seen += h->count[b];
        if (seen >= want) return (double)hvalue(b) / 1000.0;
    }
    return (double)h->max / 1000.0;
}

struct opts {
    const char *mode, *host;
    int port, conns, size, parallel, sources;
    double warmup, duration, timeout;
};

static struct sockaddr_in target;

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Blocking connect, then nonblocking + TCP_NODELAY (as any latency-minded client). */
static int connect_one(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket");
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) fail("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void set_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) fail("fcntl O_NONBLOCK");
}

/* Non-empty buckets as "[[midpoint_ns, count], ...]", so the caller can merge runs exactly. */
static void print_hist(const struct hist *h) {
    printf("[");
    int first = 1;
    for (int b = 0; b < HBUCKETS; b++)
        if (h->count[b]) {
            printf("%s[%llu, %llu]", first ? "" : ", ", (unsigned long long)hvalue(b), (unsigned long long)h->count[b]);
            first = 0;
        }
    printf("]");
}

static void print_measuring(void) { printf("{\"event\": \"measuring\"}\n"); fflush(stdout); }

/* ------------------------------------------------------------------ pingpong */
struct pp { int fd, want_out; size_t sent, got; uint64_t t0; const char *msg; };

/* Send what is left of the request; ask for EPOLLOUT only while the kernel refuses some. */
static int pp_send(struct pp *c, size_t size, int epfd) {
    ssize_t n = send(c->fd, c->msg + c->sent, size - c->sent, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        n = 0;
    }
    c->sent += (size_t)n;
    int want_out = c->sent < size;
    if (want_out != c->want_out) {
        struct epoll_event ev = {.events = want_out ? EPOLLIN | EPOLLOUT : EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want_out;
    }
    return 0;
}

static int run_pingpong(const struct opts *o) {
    size_t size = (size_t)o->size;
    /* Each connection sends its own bytes, so an echo that lands on the wrong
     * connection, or bytes out of order, count as mismatches. */
    char *msgs = malloc(size * (size_t)o->conns), *buf = malloc(size);
    if (!msgs || !buf) fail("malloc");
    for (int k = 0; k < o->conns; k++)
        for (size_t i = 0; i < size; i++) msgs[(size_t)k * size + i] = (char)(i * 7 + (size_t)k * 13 + (i >> 8));
    struct pp *cs = calloc((size_t)o->conns, sizeof *cs);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < o->conns; i++) {
        cs[i].fd = connect_one();
        cs[i].msg = msgs + (size_t)i * size;
        set_nonblocking(cs[i].fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(epfd, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    static struct hist h;
    uint64_t start = now_ns(), t_measure = start + (uint64_t)(o->warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(o->duration * 1e9), t_measured_from = 0;
    uint64_t done = 0, errors = 0, mismatches = 0;
    int alive = o->conns, measuring = o->warmup <= 0;
    if (measuring) { print_measuring(); t_measured_from = start; }
    for (int i = 0; i < o->conns; i++) {
        cs[i].t0 = now_ns();
        if (pp_send(&cs[i], size, epfd) < 0) fail("send");
    }
    struct epoll_event events[1024];
    uint64_t now = start;
    while (alive > 0) {
        int n = epoll_wait(epfd, events, 1024, 100);
        if (n < 0 && errno != EINTR) fail("epoll_wait");
        now = now_ns();
        if (!measuring && now >= t_measure) {
            /* Warm-up over: forget everything counted so far. */
            memset(&h, 0, sizeof h); done = 0;
            measuring = 1; t_measured_from = now;
            print_measuring();
        }
        if (measuring && now >= t_end) break;
        for (int i = 0; i < n; i++) {
            struct pp *c = events[i].data.ptr;
            if (c->fd < 0) continue;
            if (events[i].events & EPOLLOUT && c->sent < size) {
                if (pp_send(c, size, epfd) < 0) goto dead;
                if (c->sent < size) continue;
            }
            if (!(events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            ssize_t r = recv(c->fd, buf, size - c->got, 0);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (r <= 0) goto dead;
            /* Check each piece against what it should echo: a server that mixes up
             * connections or drops bytes is caught, whatever the piece boundaries. */
            if (memcmp(buf, c->msg + c->got, (size_t)r) != 0) mismatches++;
            c->got += (size_t)r;
            if (c->got < size) continue;
            uint64_t t = now_ns();
            hrecord(&h, t - c->t0);
            done++;
            c->got = 0; c->sent = 0; c->t0 = t;
            if (pp_send(c, size, epfd) < 0) goto dead;
            continue;
        dead:
            errors++; alive--;
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd); c->fd = -1;
        }
    }
    double secs = measuring ? (double)(now - t_measured_from) / 1e9 : 0.0;
    printf("{\"mode\": \"pingpong\", \"conns\": %d, \"size\": %d, \"seconds\": %.4f, "
           "\"round_trips\": %llu, \"rate\": %.1f, \"p50_us\": %.2f, \"p90_us\": %.2f, "
           "\"p99_us\": %.2f, \"p999_us\": %.2f, \"max_us\": %.2f, \"mean_us\": %.2f, "
           "\"errors\": %llu, \"mismatches\": %llu, \"hist\": ",
           o->conns, o->size, secs, (unsigned long long)done, secs > 0 ? (double)done / secs : 0.0,
           hpct_us(&h, 50), hpct_us(&h, 90), hpct_us(&h, 99), hpct_us(&h, 99.9),
           (double)h.max / 1000.0, h.total ? (double)h.sum / (double)h.total / 1000.0 : 0.0,
           (unsigned long long)errors, (unsigned long long)mismatches);
    print_hist(&h);
    printf("}\n");
    fflush(stdout);
    /* Let the round trips in flight finish before closing, so the server sees a
     * clean EOF rather than a reset (closing with unread data sends RST). */
    uint64_t drain_end = now_ns() + 1000000000ull;
    while (alive > 0 && now_ns() < drain_end) {
        int n = epoll_wait(epfd, events, 1024, 50);
        for (int i = 0; i < n; i++) {
            struct pp *c = events[i].data.ptr;
            if (c->fd < 0) continue;
            if (events[i].events & EPOLLOUT && c->sent < size && pp_send(c, size, epfd) == 0) continue;
            ssize_t r = recv(c->fd, buf, size - c->got, 0);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (r > 0) c->got += (size_t)r;
            if (r <= 0 || c->got >= size) {
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd); c->fd = -1; alive--;
            }
        }
    }
    for (int i = 0; i < o->conns; i++) if (cs[i].fd >= 0) close(cs[i].fd);
    close(epfd); free(cs); free(msgs); free(buf);
    return 0;
}

/* ------------------------------------------------------------------ idle */
static int run_idle(const struct opts *o) {
    int *fds = calloc((size_t)o->conns, sizeof *fds);
    char b = 'x';
    for (int i = 0; i < o->conns; i++) {
        fds[i] = connect_one();
        if (send(fds[i], &b, 1, MSG_NOSIGNAL) != 1 || recv(fds[i], &b, 1, MSG_WAITALL) != 1) {
            fprintf(stderr, "epoll_echo_client: connection %d got no 1-byte echo\n", i);
            return 1;
        }
    }
    print_measuring();
    /* Sit idle, but notice if the server drops anyone meanwhile. */
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < o->conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = i};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &ev);
    }
    uint64_t start = now_ns(), end = start + (uint64_t)(o->duration * 1e9), now;
    int dropped = 0;
    while ((now = now_ns()) < end) {
        struct epoll_event evs[64];
        int n = epoll_wait(epfd, evs, 64, (int)((end - now) / 1000000) + 1);
        for (int i = 0; i < n; i++) {
            epoll_ctl(epfd, EPOLL_CTL_DEL, fds[evs[i].data.fd], NULL);
            dropped++;
        }
    }
    printf("{\"mode\": \"idle\", \"conns\": %d, \"seconds\": %.4f, \"dropped_by_server\": %d}\n",
           o->conns, (double)(now - start) / 1e9, dropped);
    fflush(stdout);
    for (int i = 0; i < o->conns; i++) close(fds[i]);
    close(epfd); free(fds);
    return 0;
}

/* ------------------------------------------------------------------ storm */
enum { ST_CONNECTING, ST_WAIT_ECHO };
struct st { int fd, state; uint64_t t0; };

#define MAX_ERRNO 256
static int run_storm(const struct opts *o) {
    raise_nofile();
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct st *slots = calloc((size_t)o->parallel, sizeof *slots);
    int *free_slots = malloc(sizeof(int) * (size_t)o->parallel), nfree = o->parallel;
    for (int i = 0; i < o->parallel; i++) { free_slots[i] = o->parallel - 1 - i; slots[i].fd = -1; }
    static struct hist h;
    unsigned long long errs[MAX_ERRNO] = {0}, eof_before_echo = 0, timeouts = 0, mismatches = 0;
    int started = 0, finished = 0, ok = 0, inflight = 0;
    char b = 'x';
    print_measuring();
    uint64_t t_start = now_ns(), deadline = t_start + (uint64_t)(o->timeout * 1e9), now = t_start;
    struct epoll_event events[1024];

#define FINISH(s, err) do {                                                    \
        int e_ = (err);                                                         \
        if (e_ > 0) errs[e_ < MAX_ERRNO ? e_ : 0]++;                            \
        epoll_ctl(epfd, EPOLL_CTL_DEL, (s)->fd, NULL);                          \
        close((s)->fd); (s)->fd = -1;                                           \
        free_slots[nfree++] = (int)((s) - slots); inflight--; finished++;       \
    } while (0)

    while (finished < o->conns) {
        while (started < o->conns && nfree > 0) {
            struct st *s = &slots[free_slots[--nfree]];
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) fail("socket");
            struct sockaddr_in src = {.sin_family = AF_INET};
            src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(started % o->sources));
            int one = 1;
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (o->sources > 0 && bind(fd, (struct sockaddr *)&src, sizeof src) < 0) fail("bind source address");
            s->fd = fd; s->state = ST_CONNECTING; s->t0 = now_ns();
            started++; inflight++;
            int rc = connect(fd, (struct sockaddr *)&target, sizeof target), err = errno;
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
            epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
            if (rc < 0 && err != EINPROGRESS) FINISH(s, err);
        }
        if (finished >= o->conns) break;
        int n = epoll_wait(epfd, events, 1024, 100);
        if (n < 0 && errno != EINTR) fail("epoll_wait");
        now = now_ns();
        for (int i = 0; i < n; i++) {
            struct st *s = events[i].data.ptr;
            if (s->fd < 0) continue;
            if (s->state == ST_CONNECTING) {
                int err = 0; socklen_t len = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) { FINISH(s, err); continue; }
                if (send(s->fd, &b, 1, MSG_NOSIGNAL) != 1) { FINISH(s, errno ? errno : EIO); continue; }
                s->state = ST_WAIT_ECHO;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
                epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
            } else {
                char r;
                ssize_t got = recv(s->fd, &r, 1, 0);
                if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
                if (got == 1 && r != b) { mismatches++; FINISH(s, 0); }
                else if (got == 1) { hrecord(&h, now_ns() - s->t0); ok++; FINISH(s, 0); }
                else if (got == 0) { eof_before_echo++; FINISH(s, 0); }
                else FINISH(s, errno);
            }
        }
        if (now >= deadline) {
            /* Bounded run: whatever is still in flight counts as timed out. */
            for (int i = 0; i < o->parallel; i++)
                if (slots[i].fd >= 0) { timeouts++; FINISH(&slots[i], 0); }
            break;
        }
    }
    double secs = (double)(now_ns() - t_start) / 1e9;
    printf("{\"mode\": \"storm\", \"conns\": %d, \"parallel\": %d, \"sources\": %d, \"seconds\": %.4f, "
           "\"ok\": %d, \"rate\": %.1f, \"p50_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f, "
           "\"eof_before_echo\": %llu, \"timeouts\": %llu, \"mismatches\": %llu, \"errors\": {",
           o->conns, o->parallel, o->sources, secs, ok, secs > 0 ? ok / secs : 0.0,
           hpct_us(&h, 50), hpct_us(&h, 99), (double)h.max / 1000.0, eof_before_echo, timeouts, mismatches);
    int first = 1;
    for (int e = 0; e < MAX_ERRNO; e++)
        if (errs[e]) {
            printf("%s\"%s\": %llu", first ? "" : ", ", e ? strerrorname_np(e) : "other", errs[e]);
            first = 0;
        }
    printf("}, \"hist\": ");
    print_hist(&h);
    printf("}\n");
    fflush(stdout);
    close(epfd); free(slots); free(free_slots);
    return 0;
}

/* ------------------------------------------------------------------ main */
int main(int argc, char **argv) {
    struct opts o = {.host = "127.0.0.1", .port = 0, .conns = -1, .size = 64, .parallel = 500,
                     .sources = 16, .warmup = 1.0, .duration = -1, .timeout = 30.0};
    if (argc < 2) goto usage;
    o.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--host")) o.host = v;
        else if (!strcmp(a, "--port")) o.port = atoi(v);
        else if (!strcmp(a, "--conns")) o.conns = atoi(v);
        else if (!strcmp(a, "--size")) o.size = atoi(v);
        else if (!strcmp(a, "--parallel")) o.parallel = atoi(v);
        else if (!strcmp(a, "--sources")) o.sources = atoi(v);
        else if (!strcmp(a, "--warmup")) o.warmup = atof(v);
        else if (!strcmp(a, "--duration")) o.duration = atof(v);
        else if (!strcmp(a, "--timeout")) o.timeout = atof(v);
        else goto usage;
        i++;
    }
    if (o.port <= 0 || o.size <= 0 || o.parallel <= 0 || o.sources < 0 || o.sources > 250) goto usage;
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)o.port);
    if (inet_pton(AF_INET, o.host, &target.sin_addr) != 1 || (ntohl(target.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "epoll_echo_client: --host must be a 127.x.y.z loopback address\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (!strcmp(o.mode, "pingpong")) {
        if (o.conns < 0) o.conns = 100;
        if (o.duration < 0) o.duration = 5;
        return run_pingpong(&o);
    }
    if (!strcmp(o.mode, "idle")) {
        if (o.conns < 0) o.conns = 100;
        if (o.duration < 0) o.duration = 2;
        return run_idle(&o);
    }
    if (!strcmp(o.mode, "storm")) {
        if (o.conns < 0) o.conns = 5000;
        if (o.parallel > o.conns) o.parallel = o.conns;
        return run_storm(&o);
    }
usage:
    fprintf(stderr, "usage: %s pingpong|idle|storm --port P [--host 127.0.0.1] [--conns N] [--size B]\n"
                    "       [--warmup S] [--duration S] [--parallel N] [--sources N] [--timeout S]\n", argv[0]);
    return 2;
}
