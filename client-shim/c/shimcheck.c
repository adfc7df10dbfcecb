/* shimcheck: a C program that resolves names the way C programs do, for the
 * end-to-end tests of libanycast_shim.so and of libnss_anycast.so.2
 * (tests/shim.rs, tests/shim/nss.rs) and by hand:
 *
 *   shimcheck gai NAME SERVICE FAMILY SOCKTYPE PROTOCOL FLAGS
 *       getaddrinfo; NAME or SERVICE "-" is NULL, FAMILY "null" passes NULL
 *       hints.
 *       One line per result: family socktype protocol address port canonname.
 *   shimcheck ghbn NAME AF          gethostbyname (AF 0) or gethostbyname2
 *   shimcheck ghbn_r NAME AF BUFLEN gethostbyname_r (AF 0) or gethostbyname2_r
 *   shimcheck threads NAME THREADS ITERATIONS FORKS ADDRESS...
 *       after one lookup by the main thread, THREADS threads call
 *       getaddrinfo (and gethostbyname_r) ITERATIONS times each, on NAME and
 *       on "localhost"; meanwhile the main thread forks FORKS children that
 *       resolve NAME too. Every address must be one of ADDRESS...; exits 0
 *       when all is well.
 *   shimcheck loop NAME ITERATIONS  every call on NAME, ITERATIONS times,
 *       everything freed (for valgrind)
 *   shimcheck bench NAME ITERATIONS getaddrinfo+freeaddrinfo: ns per call
 *
 * Build: cc -O2 -pthread -o shimcheck shimcheck.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *address_text(const struct sockaddr *sa, char *buf, size_t len, int *port) {
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        *port = ntohs(in->sin_port);
        return inet_ntop(AF_INET, &in->sin_addr, buf, len);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        *port = ntohs(in6->sin6_port);
        return inet_ntop(AF_INET6, &in6->sin6_addr, buf, len);
    }
    *port = -1;
    return "?";
}

static int cmd_gai(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: gai NAME SERVICE FAMILY SOCKTYPE PROTOCOL FLAGS\n");
        return 2;
    }
    const char *node = strcmp(argv[2], "-") == 0 ? NULL : argv[2];
    const char *service = strcmp(argv[3], "-") == 0 ? NULL : argv[3];
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    int null_hints = strcmp(argv[4], "null") == 0;
    if (!null_hints) {
        hints.ai_family = (int)strtol(argv[4], NULL, 0);
        hints.ai_socktype = (int)strtol(argv[5], NULL, 0);
        hints.ai_protocol = (int)strtol(argv[6], NULL, 0);
        hints.ai_flags = (int)strtol(argv[7], NULL, 0);
    }
    int rc = getaddrinfo(node, service, null_hints ? NULL : &hints, &res);
    if (rc != 0) {
        printf("error %d %s\n", rc, gai_strerror(rc));
        return 0;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        char buf[INET6_ADDRSTRLEN];
        int port;
        const char *text = address_text(ai->ai_addr, buf, sizeof buf, &port);
        printf("%d %d %d %s %d %s\n", ai->ai_family, ai->ai_socktype, ai->ai_protocol, text,
               port, ai->ai_canonname ? ai->ai_canonname : "-");
    }
    freeaddrinfo(res);
    return 0;
}

static void print_hostent(const struct hostent *h) {
    printf("name %s type %d length %d", h->h_name, h->h_addrtype, h->h_length);
    for (char **a = h->h_aliases; *a != NULL; a++) printf(" alias %s", *a);
    for (char **p = h->h_addr_list; *p != NULL; p++) {
        char buf[INET6_ADDRSTRLEN];
        printf(" addr %s", inet_ntop(h->h_addrtype, *p, buf, sizeof buf));
    }
    printf("\n");
}

static int cmd_ghbn(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: ghbn NAME AF\n");
        return 2;
    }
    int af = atoi(argv[3]);
    h_errno = -12345;
    struct hostent *h = af == 0 ? gethostbyname(argv[2]) : gethostbyname2(argv[2], af);
    if (h == NULL) {
        printf("null h_errno %d\n", h_errno);
        return 0;
    }
    print_hostent(h);
    return 0;
}

static int cmd_ghbn_r(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: ghbn_r NAME AF BUFLEN\n");
        return 2;
    }
    int af = atoi(argv[3]);
    size_t len = (size_t)atol(argv[4]);
    char *buf = malloc(len ? len : 1);
    struct hostent ret, *result = (struct hostent *)1;
    int herr = -12345;
    int rc = af == 0 ? gethostbyname_r(argv[2], &ret, buf, len, &result, &herr)
                     : gethostbyname2_r(argv[2], af, &ret, buf, len, &result, &herr);
    printf("rc %d h_errno %d result %s\n", rc, herr, result == NULL ? "null" : "set");
    if (rc == 0 && result != NULL) print_hostent(result);
    free(buf);
    return 0;
}

/* --- threads and fork ------------------------------------------------- */

static const char *g_name;
static int g_iterations;
static char **g_allowed;
static int g_allowed_count;

static int allowed(const char *text) {
    for (int i = 0; i < g_allowed_count; i++)
        if (strcmp(g_allowed[i], text) == 0) return 1;
    return 0;
}

/* One round of lookups; returns the number of problems (reported on stderr). */
static int one_round(const char *who) {
    int problems = 0;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(g_name, "80", &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "%s: getaddrinfo(%s): %s\n", who, g_name, gai_strerror(rc));
        return 1;
    }
    int count = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next, count++) {
        char buf[INET6_ADDRSTRLEN];
        int port;
        const char *text = address_text(ai->ai_addr, buf, sizeof buf, &port);
        if (!allowed(text) || port != 80) {
            fprintf(stderr, "%s: unexpected %s port %d\n", who, text, port);
            problems++;
        }
    }
    if (count == 0) problems++;
    freeaddrinfo(res);

    rc = getaddrinfo("localhost", "80", &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "%s: getaddrinfo(localhost): %s\n", who, gai_strerror(rc));
        return problems + 1;
    }
    freeaddrinfo(res);

    char hbuf[1024];
    struct hostent ret, *result = NULL;
    int herr = 0;
    rc = gethostbyname_r(g_name, &ret, hbuf, sizeof hbuf, &result, &herr);
    if (rc != 0 || result == NULL) {
        fprintf(stderr, "%s: gethostbyname_r(%s): rc %d h_errno %d\n", who, g_name, rc, herr);
        problems++;
    } else {
        char buf[INET6_ADDRSTRLEN];
        for (char **p = result->h_addr_list; *p != NULL; p++)
            if (!allowed(inet_ntop(result->h_addrtype, *p, buf, sizeof buf))) {
                fprintf(stderr, "%s: unexpected %s from gethostbyname_r\n", who, buf);
                problems++;
            }
    }
    return problems;
}

static void *worker(void *arg) {
    char who[32];
    snprintf(who, sizeof who, "thread %ld", (long)(size_t)arg);
    long problems = 0;
    for (int i = 0; i < g_iterations; i++) problems += one_round(who);
    return (void *)(size_t)problems;
}

static int cmd_threads(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: threads NAME THREADS ITERATIONS FORKS ADDRESS...\n");
        return 2;
    }
    g_name = argv[2];
    int threads = atoi(argv[3]);
    g_iterations = atoi(argv[4]);
    int forks = atoi(argv[5]);
    g_allowed = argv + 6;
    g_allowed_count = argc - 6;
    /* One lookup first, by the main thread alone: it loads the NSS modules
     * the lookups need (glibc dlopens a module such as libnss_anycast.so.2 on
     * its first use). A fork while another thread is inside that dlopen
     * leaves the child with the loader's lock held by a thread it does not
     * have, whatever the module; forks below happen while the threads
     * resolve, after that. */
    long problems = one_round("main");
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    for (long i = 0; i < threads; i++)
        if (pthread_create(&ids[i], NULL, worker, (void *)(size_t)i) != 0) {
            perror("pthread_create");
            return 1;
        }
    /* Fork while the threads are resolving: the child must not deadlock. */
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            alarm(20); /* a deadlocked child dies instead of hanging the test */
            int child_problems = one_round("child") + one_round("child");
            fflush(stderr);
            _exit(child_problems == 0 ? 0 : 1);
        }
        int status = 0;
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "fork %d: child status %d\n", f, status);
            problems++;
        }
    }
    for (int i = 0; i < threads; i++) {
        void *result = NULL;
        pthread_join(ids[i], &result);
        problems += (long)(size_t)result;
    }
    free(ids);
    printf("threads %d iterations %d forks %d problems %ld\n", threads, g_iterations, forks,
           problems);
    return problems == 0 ? 0 : 1;
}

/* --- everything, freed, for valgrind ---------------------------------- */

static int cmd_loop(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: loop NAME ITERATIONS\n");
        return 2;
    }
    const char *name = argv[2];
    int iterations = atoi(argv[3]);
    int failures = 0;
    for (int i = 0; i < iterations; i++) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_flags = AI_CANONNAME;
        if (getaddrinfo(name, "http", &hints, &res) == 0) freeaddrinfo(res);
        else failures++;
        hints.ai_family = AF_INET6;
        hints.ai_flags = AI_V4MAPPED | AI_ALL | AI_CANONNAME;
        if (getaddrinfo(name, "443", &hints, &res) == 0) freeaddrinfo(res);
        else failures++;
        if (getaddrinfo(NULL, "80", NULL, &res) == 0) freeaddrinfo(res);
        if (getaddrinfo("nosuch.any.example.net", "80", NULL, &res) == 0) freeaddrinfo(res);
        if (getaddrinfo("localhost", "80", NULL, &res) == 0) freeaddrinfo(res);
        if (gethostbyname(name) == NULL) failures++;
        if (gethostbyname2(name, AF_INET) == NULL) failures++;
        char small[8], big[2048];
        struct hostent ret, *result;
        int herr;
        if (gethostbyname_r(name, &ret, small, sizeof small, &result, &herr) != ERANGE) failures++;
        if (gethostbyname2_r(name, AF_INET, &ret, big, sizeof big, &result, &herr) != 0) failures++;
    }
    printf("loop %d failures %d\n", iterations, failures);
    return failures == 0 ? 0 : 1;
}

static int cmd_bench(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: bench NAME ITERATIONS\n");
        return 2;
    }
    int iterations = atoi(argv[3]);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    /* Warm up (first-call initialisation of the C library and the shim). */
    for (int i = 0; i < 10; i++)
        if (getaddrinfo(argv[2], "80", &hints, &res) == 0) freeaddrinfo(res);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int failures = 0;
    for (int i = 0; i < iterations; i++) {
        if (getaddrinfo(argv[2], "80", &hints, &res) == 0) freeaddrinfo(res);
        else failures++;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
    printf("%s %d calls %.0f ns/call failures %d\n", argv[2], iterations, ns / iterations,
           failures);
    return failures == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc >= 2) {
        if (strcmp(argv[1], "gai") == 0) return cmd_gai(argc, argv);
        if (strcmp(argv[1], "ghbn") == 0) return cmd_ghbn(argc, argv);
        if (strcmp(argv[1], "ghbn_r") == 0) return cmd_ghbn_r(argc, argv);
        if (strcmp(argv[1], "threads") == 0) return cmd_threads(argc, argv);
        if (strcmp(argv[1], "loop") == 0) return cmd_loop(argc, argv);
        if (strcmp(argv[1], "bench") == 0) return cmd_bench(argc, argv);
    }
    fprintf(stderr, "usage: shimcheck gai|ghbn|ghbn_r|threads|loop|bench ...\n");
    return 2;
}
