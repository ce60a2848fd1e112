/* Loaded with LD_PRELOAD into every process of the loopback cluster (deploy/cluster/cluster.py): a bind() to the
 * wildcard address (0.0.0.0 or ::) becomes a bind to 127.0.0.1. Beam's Java gRPC servers (the job service, the
 * artifact service, the Fn API servers of each Spark executor and Flink TaskManager) bind every interface and have
 * no setting for it; with this, nothing the cluster starts listens beyond this machine. Explicit addresses pass
 * through unchanged. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *address, socklen_t length) {
    static bind_function real_bind;
    if (!real_bind) real_bind = (bind_function)dlsym(RTLD_NEXT, "bind");
    if (address && address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in loopback;
        memcpy(&loopback, address, sizeof loopback);
        if (loopback.sin_addr.s_addr == htonl(INADDR_ANY)) {
            loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&loopback, sizeof loopback);
        }
    } else if (address && address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 loopback;
        memcpy(&loopback, address, sizeof loopback);
        if (IN6_IS_ADDR_UNSPECIFIED(&loopback.sin6_addr)) {
            /* ::ffff:127.0.0.1, so a dual-stack socket still takes IPv4 clients of 127.0.0.1. */
            memset(&loopback.sin6_addr, 0, sizeof loopback.sin6_addr);
            loopback.sin6_addr.s6_addr[10] = 0xff;
            loopback.sin6_addr.s6_addr[11] = 0xff;
            loopback.sin6_addr.s6_addr[12] = 127;
            loopback.sin6_addr.s6_addr[15] = 1;
            return real_bind(fd, (const struct sockaddr *)&loopback, sizeof loopback);
        }
    }
    return real_bind(fd, address, length);
}
