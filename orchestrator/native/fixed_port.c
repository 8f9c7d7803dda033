/* LD_PRELOAD shim for the embedded Kafka broker: the first bind() of an IPv4 socket
 * to port 0 gets port $SCALELAB_FIXED_PORT instead (with SO_REUSEADDR), so that the
 * librdkafka mock broker listens on a port we choose and a restarted broker comes
 * back at the same address, as a real broker does. Every other bind() is untouched. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    static int used;
    if (!real_bind)
        real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    const char *port = getenv("SCALELAB_FIXED_PORT");
    if (!used && port && addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_port == 0) {
            int one = 1;
            used = 1;
            a.sin_port = htons((unsigned short)atoi(port));
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real_bind(fd, addr, len);
}
