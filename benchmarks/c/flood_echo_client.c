/* Minimal closed-loop epoll echo client: the yardstick for `socktools flood --mode echo`.
 *
 * Each of CONNS connections sends SIZE bytes, waits until all SIZE bytes have come
 * back, and sends again (one request in flight per connection, like flood's echo
 * mode).  Round trips are counted for DURATION seconds after every connection has
 * finished its first round trip.  Loopback only: HOST must be 127.x.x.x.
 *
 * Build: gcc -O2 -o flood_echo_client flood_echo_client.c
 * Usage: flood_echo_client HOST PORT CONNS SIZE DURATION
 * Prints one JSON line: {"round_trips": N, "seconds": S, "per_second": R}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT CONNS SIZE DURATION\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), conns = atoi(argv[3]), size = atoi(argv[4]);
    double duration = atof(argv[5]);
    if (strncmp(host, "127.", 4) != 0) { fprintf(stderr, "loopback (127.x) only\n"); return 2; }
    if (conns < 1 || size < 1 || size > 65536) { fprintf(stderr, "bad CONNS or SIZE\n"); return 2; }

    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("inet_pton");

    char *payload = malloc(size), buf[65536];
    memset(payload, 'x', size);
    int *got = calloc(conns + 1024, sizeof(int));  /* bytes of the current echo received, by fd */
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");

    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int fl = 1;
        if (ioctl(fd, FIONBIO, &fl) < 0) die("FIONBIO");
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
        if (send(fd, payload, size, 0) != size) die("send");
    }

    struct epoll_event events[256];
    long round_trips = 0, warm = 0;
    int warming = 1;
    double start = now(), deadline = start + duration + 60;
    while (1) {
        int n = epoll_wait(ep, events, 256, 1000);
        if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                fprintf(stderr, "connection closed (%s)\n", r ? strerror(errno) : "EOF");
                return 1;
            }
            got[fd] += r;
            if (got[fd] >= size) {
                got[fd] -= size;
                round_trips++;
                if (send(fd, payload, size, 0) != size) die("send");
            }
        }
        if (warming && round_trips >= conns) {   /* every connection answered once */
            warming = 0;
            warm = round_trips;
            start = now();
            deadline = start + duration;
        }
        if (now() >= deadline) break;
    }
    double secs = now() - start;
    long counted = round_trips - warm;
    printf("{\"round_trips\": %ld, \"seconds\": %.3f, \"per_second\": %.1f}\n",
           counted, secs, counted / secs);
    return 0;
}
