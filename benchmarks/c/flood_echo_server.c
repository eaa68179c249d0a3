/* Minimal single-threaded epoll echo server, used by bench_flood_throughput.py so
 * that the server is never the bottleneck when comparing load generators.
 *
 * Build: gcc -O2 -o flood_echo_server flood_echo_server.c
 * Usage: flood_echo_server HOST PORT   (PORT 0 picks a free one)
 * Prints "listening PORT" on stdout once ready; stops on SIGTERM or stdin EOF.
 * Echoes everything; a partial send parks the rest and waits for EPOLLOUT.
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

#define MAXFD 65536
static char *pend[MAXFD];      /* unsent bytes per fd (rare) */
static int pend_len[MAXFD];
static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }
static void die(const char *what) { perror(what); exit(1); }

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(pend[fd]);
    pend[fd] = NULL;
    pend_len[fd] = 0;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s HOST PORT\n", argv[0]); return 2; }
    if (strncmp(argv[1], "127.", 4) != 0) { fprintf(stderr, "loopback (127.x) only\n"); return 2; }
    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) die("inet_pton");
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(ls, 4096) < 0) die("listen");
    socklen_t sl = sizeof sa;
    getsockname(ls, (struct sockaddr *)&sa, &sl);
    printf("listening %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    ev.data.fd = 0;
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);          /* stdin EOF = stop */
    static char buf[65536];
    struct epoll_event events[256];
    while (!stop) {
        int n = epoll_wait(ep, events, 256, 500);
        if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == 0) {
                if (read(0, buf, sizeof buf) <= 0) stop = 1;
                continue;
            }
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAXFD) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            if (pend_len[fd]) {                     /* writable again: flush the rest */
                ssize_t w = send(fd, pend[fd], pend_len[fd], MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) { drop(ep, fd); continue; }
                if (w > 0) { memmove(pend[fd], pend[fd] + w, pend_len[fd] - w); pend_len[fd] -= w; }
                if (!pend_len[fd]) {
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ce);
                }
                continue;
            }
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                drop(ep, fd);
                continue;
            }
            ssize_t w = send(fd, buf, r, MSG_NOSIGNAL);
            if (w < 0) { if (errno != EAGAIN) { drop(ep, fd); continue; } w = 0; }
            if (w < r) {                            /* park the rest, stop reading */
                pend[fd] = malloc(r - w);
                memcpy(pend[fd], buf + w, r - w);
                pend_len[fd] = r - w;
                struct epoll_event ce = {.events = EPOLLOUT, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ce);
            }
        }
    }
    return 0;
}
