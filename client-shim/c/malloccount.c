/* malloccount: counts the allocations that getaddrinfo, gethostbyname and
 * gethostbyname_r make for a name, so that a run with libanycast_shim.so
 * preloaded can be compared with one without: for a name that is not an
 * anycast name the shim must add none.
 *
 *   malloccount NAME ITERATIONS
 *
 * prints "allocations N" for ITERATIONS rounds after a warm-up round (the C
 * library allocates its own state on first use). The program defines malloc
 * and friends itself (on top of glibc's __libc_* entry points), which every
 * library in the process then calls.
 *
 * Build: cc -O2 -rdynamic -o malloccount malloccount.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static volatile long allocations;

void *malloc(size_t n) {
    __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t size) {
    __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t n) {
    __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, n);
}
void *memalign(size_t align, size_t n) {
    __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_memalign(align, n);
}
void *aligned_alloc(size_t align, size_t n) { return memalign(align, n); }
int posix_memalign(void **out, size_t align, size_t n) {
    void *p = memalign(align, n);
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}
void free(void *p) { __libc_free(p); }

static void round_of(const char *name) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(name, "80", &hints, &res) == 0) freeaddrinfo(res);
    (void)gethostbyname(name);
    char buf[2048];
    struct hostent ret, *result;
    int herr;
    (void)gethostbyname_r(name, &ret, buf, sizeof buf, &result, &herr);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: malloccount NAME ITERATIONS\n");
        return 2;
    }
    int iterations = atoi(argv[2]);
    round_of(argv[1]);
    long before = __atomic_load_n(&allocations, __ATOMIC_RELAXED);
    for (int i = 0; i < iterations; i++) round_of(argv[1]);
    long after = __atomic_load_n(&allocations, __ATOMIC_RELAXED);
    printf("allocations %ld\n", after - before);
    return 0;
}
