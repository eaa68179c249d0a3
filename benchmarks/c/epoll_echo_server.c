/* A minimal, careful epoll echo server: the reference point of bench_serve.py.
 *
 *   epoll_echo_server [--host 127.0.0.1] [--port 0] [--backlog 4096]
 *
 * Prints "listening on HOST:PORT" once bound (port 0 picks a free port), echoes
 * every byte back, and exits 0 on SIGTERM/SIGINT.
 *
 * What "minimal but careful" means here, so the comparison is fair to Python:
 *   - one thread, level-triggered epoll, one read() per readiness event
 *     (the same shape as a selectors loop: no edge-triggered tricks, no
 *     io_uring, no SO_REUSEPORT fan-out);
 *   - accept4() drains the accept queue on each wakeup, like a good Python
 *     server does with a loop around accept();
 *   - a write is tried at once; only what the kernel refuses is buffered and
 *     EPOLLOUT requested, and reading pauses until that is flushed (so a peer
 *     that does not read cannot make us buffer without bound);
 *   - TCP_NODELAY on accepted sockets, as asyncio/uvloop do by default.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE 65536
#define MAX_EVENTS 1024

struct conn {
    int fd;
    char *out;        /* bytes the kernel refused, waiting for EPOLLOUT */
    size_t out_len;
    int closing;      /* peer sent EOF: close once `out` is flushed */
};

static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static int epfd;
static unsigned long long accepted = 0, closed_conns = 0, bytes_echoed = 0;

static void die(const char *what) { perror(what); exit(1); }

static void conn_close(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    free(c);
    closed_conns++;
}

static void set_interest(struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send buf[0:len]; keep what the kernel does not take. Returns -1 if the connection died. */
static int conn_send(struct conn *c, const char *buf, size_t len) {
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
        n = 0;
    }
    bytes_echoed += (size_t)n;
    if ((size_t)n < len) {
        size_t rest = len - (size_t)n;
        char *grown = realloc(c->out, c->out_len + rest);
        if (!grown) return -1;
        memcpy(grown + c->out_len, buf + n, rest);
        c->out = grown;
        c->out_len += rest;
        set_interest(c, EPOLLOUT);   /* pause reading until flushed */
    }
    return 0;
}

static void on_readable(struct conn *c) {
    static char buf[READ_SIZE];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n > 0) {
        if (conn_send(c, buf, (size_t)n) < 0) conn_close(c);
    } else if (n == 0) {
        if (c->out_len) { c->closing = 1; set_interest(c, EPOLLOUT); }
        else conn_close(c);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        conn_close(c);
    }
}

static void on_writable(struct conn *c) {
    ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) conn_close(c);
        return;
    }
    bytes_echoed += (size_t)n;
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (size_t)n;
    if (c->out_len == 0) {
        if (c->closing) conn_close(c);
        else set_interest(c, EPOLLIN);
    }
}

static void on_listener(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            /* EAGAIN: queue drained. EMFILE & co: leave the rest queued for now;
             * a production server would pause accepting, this one stays minimal. */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) { close(fd); free(c); continue; }
        accepted++;
    }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0, backlog = 4096;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backlog") && i + 1 < argc) backlog = atoi(argv[++i]);
        else { fprintf(stderr, "usage: %s [--host H] [--port P] [--backlog N]\n", argv[0]); return 2; }
    }

    struct sigaction sa = {.sa_handler = on_signal};   /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "bad IPv4 host: %s\n", host); return 2; }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, backlog) < 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};   /* NULL marks the listener */
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);

    printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    while (!stop_requested) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) { on_listener(lfd); continue; }
            if (events[i].events & EPOLLOUT) on_writable(c);
            else if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
    }
    printf("stopped: accepted %llu, closed %llu, bytes echoed %llu\n", accepted, closed_conns, bytes_echoed);
    return 0;
}
