/*
 * How fast a writer fills a shared memory map, depending on what a helper
 * thread does ahead of it (brook's active segment is such a map, and its
 * pager such a helper; see src/storage/pager.rs).
 *
 * The writer copies 126,000-byte chunks (1,000 of brook's benchmark
 * records) into the map of a 1 GiB file preallocated with posix_fallocate,
 * 500 MB in all. The helper keeps up to 4 MiB ahead of it, 1 MiB at a time:
 *
 *   populate  madvise(MADV_POPULATE_WRITE), what brook's pager does;
 *   zeros     pwrite() of zeros, which allocates page-cache pages the way
 *             write() does (a probe only: in brook it would need a
 *             handshake so that it never zeroes what the writer wrote);
 *   none      no helper.
 *
 * It prints GB/s and how many chunks found the helper behind the writer.
 *
 *   cc -O2 -pthread benches/map_helper_probe.c -o /tmp/map_helper_probe
 *   /tmp/map_helper_probe populate /tmp; /tmp/map_helper_probe zeros /tmp
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define FILE_BYTES (1ul << 30)
#define TOTAL (500ul << 20)
#define CHUNK 126000ul
#define AHEAD (4ul << 20)
#define STEP (1ul << 20)

enum helper { NONE, POPULATE, ZEROS };

static enum helper helper;
static int fd;
static char *map;
static atomic_ulong written; /* the writer's position */
static atomic_ulong ready;   /* the helper's position */
static atomic_int stop;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *run_helper(void *unused) {
    static char zeros[STEP];
    unsigned long done = 0;
    (void)unused;
    while (!atomic_load(&stop)) {
        if (done < atomic_load(&written) + AHEAD && done + STEP <= FILE_BYTES) {
            if (helper == POPULATE)
                madvise(map + done, STEP, MADV_POPULATE_WRITE);
            else if (pwrite(fd, zeros, STEP, done) != (ssize_t)STEP)
                perror("pwrite");
            done += STEP;
            atomic_store(&ready, done);
        } else {
            usleep(20);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s populate|zeros|none DIRECTORY\n", argv[0]);
        return 2;
    }
    helper = !strcmp(argv[1], "populate") ? POPULATE : !strcmp(argv[1], "zeros") ? ZEROS : NONE;
    char path[4096];
    snprintf(path, sizeof path, "%s/map_helper_probe.data", argv[2]);
    fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0 || posix_fallocate(fd, 0, FILE_BYTES) != 0) {
        perror(path);
        return 1;
    }
    map = mmap(NULL, FILE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    char *chunk = malloc(CHUNK);
    memset(chunk, 5, CHUNK);
    pthread_t thread;
    if (helper != NONE) {
        pthread_create(&thread, NULL, run_helper, NULL);
        usleep(2000);
    }
    unsigned long pos = 0, behind = 0;
    double start = now();
    while (pos + CHUNK <= TOTAL) {
        if (helper != NONE && pos + CHUNK > atomic_load(&ready))
            behind++;
        memcpy(map + pos, chunk, CHUNK);
        pos += CHUNK;
        atomic_store(&written, pos);
    }
    double took = now() - start;
    atomic_store(&stop, 1);
    if (helper != NONE)
        pthread_join(thread, NULL);
    printf("%-8s %.2f GB/s, helper behind at %lu of %lu chunks\n", argv[1], pos / took / 1e9,
           behind, pos / CHUNK);
    munmap(map, FILE_BYTES);
    close(fd);
    unlink(path);
    return 0;
}
