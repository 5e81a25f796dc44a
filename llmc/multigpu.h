/*
 * multigpu.h: data-parallel training across GPUs with NCCL, one process per GPU.
 *
 * Process group, in this order:
 *   1. OpenMPI: launched by `mpirun -np N ./train_mamba2cu ...` (built with MPI, the default when mpi.h is found):
 *      rank and size from MPI, the NCCL unique id broadcast with MPI_Bcast.
 *   2. Without MPI, torchrun-style environment variables: RANK, WORLD_SIZE, LOCAL_RANK (default: RANK mod the GPU
 *      count), or Slurm's under srun (SLURM_PROCID, SLURM_STEP_NUM_TASKS or SLURM_NTASKS, SLURM_LOCALID; used only
 *      inside a job step, SLURM_STEP_ID set, so a batch script's own process stays a single rank), and a rendezvous
 *      for the NCCL unique id in MAMBA2_RENDEZVOUS (default tcp:$MASTER_ADDR:$MASTER_PORT when both are set):
 *        file:/shared/dir/id   rank 0 writes the id to this path (temp file + rename); the others wait for it;
 *        tcp:HOST:PORT         rank 0 listens on PORT and sends the id to each rank that connects to HOST:PORT.
 *      Under Slurm the file path gets ".<SLURM_JOB_ID>.<SLURM_STEP_ID>" appended, so a stale id of an earlier job is
 *      never read. Define MULTIGPU_RENDEZVOUS_ONLY before including this header to get only the process-group and
 *      rendezvous code (no CUDA, no NCCL): test_rendezvous.c tests it with several local processes.
 *      Flags of the trainer override the variables (-pr rank, -pn world size, -pl local rank, -pi rendezvous).
 *   3. Neither: a single process (world size 1, no NCCL).
 * Built with -DNO_MULTI_GPU (make NO_MULTI_GPU=1) there is no NCCL at all and only case 3 exists.
 *
 * What the trainer calls:
 *   multigpu_init / multigpu_free
 *   multigpu_allreduce_sum_f32(buf, n, stream)   sum over ranks, in place (gradients, losses, norms)
 *   multigpu_reduce_scatter_f32 / multigpu_allgather_f32   ZeRO-1: each rank owns a shard of the optimizer
 *   multigpu_barrier
 * NCCL's sums are deterministic for a given number of ranks and topology: two identical runs are bitwise identical.
 */
#ifndef MAMBA2_MULTIGPU_H
#define MAMBA2_MULTIGPU_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#ifndef MULTIGPU_RENDEZVOUS_ONLY
#include <cuda_runtime.h>
#endif

#include "utils.h"

#if !defined(NO_MULTI_GPU) && !defined(MULTIGPU_RENDEZVOUS_ONLY)
#include <nccl.h>
#endif
#if !defined(NO_MULTI_GPU) && defined(USE_MPI)
#include <mpi.h>
#endif

/* ---- the process group and the rendezvous: no CUDA, no NCCL (compiled alone with MULTIGPU_RENDEZVOUS_ONLY) ---- */

/* an integer environment variable, or fallback when unset; a value that is not an integer is an error */
static inline int env_int(const char* name, int fallback) {
    const char* v = getenv(name);
    if (v == NULL || *v == '\0') return fallback;
    char* end;
    long x = strtol(v, &end, 10);
    if (*end != '\0' || x < 0 || x > 1000000) die("environment variable %s='%s': expected a non-negative integer", name, v);
    return (int)x;
}

/* rank, world size and local rank of this process from the launcher's environment: explicit values (>= 0) first,
   then torchrun's RANK / WORLD_SIZE / LOCAL_RANK, then Slurm's inside an srun step; ndev: GPUs on this host (for
   the default local rank). Returns the source's name ("flags", "torchrun", "slurm", "single"). */
static inline const char* process_group_from_env(int* rank, int* world, int* local_rank, int ndev, int rank_arg,
                                                 int world_arg, int local_arg) {
    const char* src = "single";
    *world = 1; *rank = 0; *local_rank = -1;
    if (getenv("WORLD_SIZE") != NULL || getenv("RANK") != NULL) {
        src = "torchrun";
        *world = env_int("WORLD_SIZE", 1); *rank = env_int("RANK", 0); *local_rank = env_int("LOCAL_RANK", -1);
    } else if (getenv("SLURM_PROCID") != NULL && getenv("SLURM_STEP_ID") != NULL) {
        src = "slurm";
        *world = env_int("SLURM_STEP_NUM_TASKS", env_int("SLURM_NTASKS", 1));
        *rank = env_int("SLURM_PROCID", 0);
        *local_rank = env_int("SLURM_LOCALID", -1);
    }
    if (world_arg >= 0 || rank_arg >= 0 || local_arg >= 0) src = "flags";
    if (world_arg >= 0) *world = world_arg;
    if (rank_arg >= 0) *rank = rank_arg;
    if (local_arg >= 0) *local_rank = local_arg;
    if (*local_rank < 0) *local_rank = ndev > 0 ? *rank % ndev : 0;
    if (*world < 1 || *rank < 0 || *rank >= *world)
        die("multi-GPU (%s): rank %d is not in [0, world size %d)", src, *rank, *world);
    return src;
}

/* the rendezvous address: the argument, else MAMBA2_RENDEZVOUS, else tcp:$MASTER_ADDR:$MASTER_PORT; NULL if none
   (buf holds the composed tcp: string) */
static inline const char* rendezvous_address(const char* arg, char* buf, size_t n) {
    if (arg) return arg;
    const char* v = getenv("MAMBA2_RENDEZVOUS");
    if (v && *v) return v;
    const char* host = getenv("MASTER_ADDR");
    const char* port = getenv("MASTER_PORT");
    if (host && *host && port && *port) { snprintf(buf, n, "tcp:%s:%s", host, port); return buf; }
    return NULL;
}

/* the file rendezvous's path: under Slurm with ".<job>.<step>" appended, so an earlier job's id is never read */
static inline void rendezvous_file_path(char* out, size_t n, const char* path) {
    const char* job = getenv("SLURM_JOB_ID");
    const char* step = getenv("SLURM_STEP_ID");
    if (job && *job) snprintf(out, n, "%s.%s.%s", path, job, step && *step ? step : "0");
    else snprintf(out, n, "%s", path);
}

/* file rendezvous: rank 0 publishes the id atomically; the others wait (up to 5 minutes) for it to appear */
static inline void rendezvous_file(void* id, size_t idlen, const char* path_in, int rank) {
    char path[4200];
    rendezvous_file_path(path, sizeof(path), path_in);
    if (rank == 0) {
        char tmp[4300];
        snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
        FILE* f = fopen(tmp, "wb");
        if (!f) die("rendezvous: rank 0 cannot write %s: %s", tmp, strerror(errno));
        fwriteCheck(id, idlen, 1, f);
        fcloseCheck(f);
        if (rename(tmp, path) != 0) die("rendezvous: cannot rename %s to %s: %s", tmp, path, strerror(errno));
        return;
    }
    for (int tries = 0; tries < 3000; tries++) {
        FILE* f = fopen(path, "rb");
        if (f) {
            size_t got = fread(id, idlen, 1, f);
            fclose(f);
            if (got == 1) return;
        }
        { struct timespec ts = {0, 100000000}; nanosleep(&ts, NULL); }
    }
    die("rendezvous: rank %d waited 5 minutes for rank 0 to write %s (is rank 0 running, and is the path on a "
        "filesystem every rank sees?)", rank, path);
}

/* TCP rendezvous: rank 0 serves the id to world-1 connections; the others retry connecting for up to 5 minutes */
static inline void rendezvous_tcp(void* id, size_t idlen, const char* hostport, int rank, int world) {
    char host[256];
    const char* colon = strrchr(hostport, ':');
    if (colon == NULL || colon == hostport || (size_t)(colon - hostport) >= sizeof(host))
        die("rendezvous: 'tcp:%s' must be tcp:HOST:PORT", hostport);
    memcpy(host, hostport, colon - hostport);
    host[colon - hostport] = '\0';
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535) die("rendezvous: bad port in 'tcp:%s'", hostport);
    if (rank == 0) {
        int srv = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof(addr));
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_ANY);
        addr.sin_port = htons((uint16_t)port);
        if (bind(srv, (struct sockaddr*)&addr, sizeof(addr)) != 0 || listen(srv, world) != 0)
            die("rendezvous: rank 0 cannot listen on port %d: %s", port, strerror(errno));
        for (int i = 1; i < world; i++) {
            int c = accept(srv, NULL, NULL);
            if (c < 0) die("rendezvous: accept failed: %s", strerror(errno));
            if (write(c, id, idlen) != (ssize_t)idlen) die("rendezvous: send to a rank failed");
            close(c);
        }
        close(srv);
        return;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    if (getaddrinfo(host, portstr, &hints, &res) != 0 || res == NULL) die("rendezvous: cannot resolve host '%s'", host);
    for (int tries = 0; tries < 3000; tries++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, res->ai_addr, res->ai_addrlen) == 0) {
            size_t got = 0;
            while (got < idlen) {
                ssize_t r = read(s, (char*)id + got, idlen - got);
                if (r <= 0) break;
                got += (size_t)r;
            }
            close(s);
            if (got == idlen) { freeaddrinfo(res); return; }
        } else {
            close(s);
        }
        { struct timespec ts = {0, 100000000}; nanosleep(&ts, NULL); }
    }
    die("rendezvous: rank %d could not reach rank 0 at %s for 5 minutes", rank, hostport);
}

/* exchanges rank 0's id (idlen bytes) with every rank through addr ("file:/path" or "tcp:HOST:PORT") */
static inline void rendezvous(void* id, size_t idlen, const char* addr, int rank, int world) {
    if (strncmp(addr, "file:", 5) == 0) rendezvous_file(id, idlen, addr + 5, rank);
    else if (strncmp(addr, "tcp:", 4) == 0) rendezvous_tcp(id, idlen, addr + 4, rank, world);
    else die("MAMBA2_RENDEZVOUS='%s': expected file:/path or tcp:HOST:PORT", addr);
}


#ifndef MULTIGPU_RENDEZVOUS_ONLY
typedef struct {
    int rank;        /* this process, 0..world-1 */
    int world;       /* number of processes = GPUs */
    int local_rank;  /* GPU index on this host */
    int zero_stage;  /* 0: every rank holds the optimizer state; 1: each holds 1/world of it */
    int using_mpi;
#ifndef NO_MULTI_GPU
    ncclComm_t comm;
#endif
    cudaStream_t comm_stream; /* NCCL work runs here, overlapped with the backward on the main stream */
} MultiGPU;

typedef struct {
    int rank, world, local_rank;   /* -1 = not given */
    const char* rendezvous;        /* NULL = not given */
} MultiGPUArgs;

#ifndef NO_MULTI_GPU
#define ncclCheck(x) do { ncclResult_t r_ = (x); \
    if (r_ != ncclSuccess) die("NCCL error at %s:%d: %s", __FILE__, __LINE__, ncclGetErrorString(r_)); } while (0)

#endif

static inline MultiGPU multigpu_init(int* argc, char*** argv, const MultiGPUArgs* a, int zero_stage) {
    MultiGPU g;
    memset(&g, 0, sizeof(g));
    g.world = 1;
    (void)argc; (void)argv;
#ifndef NO_MULTI_GPU
    int ndev = 0;
    cudaGetDeviceCount(&ndev);
    ncclUniqueId id;
#ifdef USE_MPI
    if (getenv("OMPI_COMM_WORLD_SIZE") != NULL || getenv("PMI_SIZE") != NULL) {
        MPI_Init(argc, argv);
        MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
        MPI_Comm_size(MPI_COMM_WORLD, &g.world);
        g.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", ndev > 0 ? g.rank % ndev : 0);
        g.using_mpi = 1;
        if (g.world > 1) {
            if (g.rank == 0) ncclCheck(ncclGetUniqueId(&id));
            MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
        }
    } else
#endif
    {
        const char* src = process_group_from_env(&g.rank, &g.world, &g.local_rank, ndev, a->rank, a->world,
                                                 a->local_rank);
        if (g.world > 1) {
            char buf[600];
            const char* rdv = rendezvous_address(a->rendezvous, buf, sizeof(buf));
            if (rdv == NULL)
                die("multi-GPU without MPI (%s: world size %d) needs a rendezvous for the NCCL id: set "
                    "MAMBA2_RENDEZVOUS to file:/shared/path or tcp:HOST:PORT, or MASTER_ADDR and MASTER_PORT (or "
                    "launch with mpirun)", src, g.world);
            if (g.rank == 0) ncclCheck(ncclGetUniqueId(&id));
            rendezvous(&id, sizeof(id), rdv, g.rank, g.world);
        }
    }
    if (g.world > 1) {
        if (ndev == 0) die("multi-GPU: rank %d sees no GPU", g.rank);
        if (g.local_rank >= ndev)
            die("multi-GPU: rank %d wants GPU %d (LOCAL_RANK) but this host has %d", g.rank, g.local_rank, ndev);
        cudaCheck(cudaSetDevice(g.local_rank));
        ncclCheck(ncclCommInitRank(&g.comm, g.world, id, g.rank));
        cudaCheck(cudaStreamCreate(&g.comm_stream));
    }
#else
    if ((a->world > 1) || (getenv("WORLD_SIZE") && atoi(getenv("WORLD_SIZE")) > 1) ||
        (getenv("SLURM_STEP_ID") && getenv("SLURM_NTASKS") && atoi(getenv("SLURM_NTASKS")) > 1))
        die("this build has no multi-GPU support (built with NO_MULTI_GPU=1)");
#endif
    g.zero_stage = g.world > 1 ? zero_stage : 0;
    return g;
}

static inline void multigpu_free(MultiGPU* g) {
#ifndef NO_MULTI_GPU
    if (g->world > 1) {
        ncclCommDestroy(g->comm);
        cudaStreamDestroy(g->comm_stream);
    }
#ifdef USE_MPI
    if (g->using_mpi) MPI_Finalize();
#endif
#endif
    (void)g;
}

static inline void multigpu_allreduce_sum_f32(MultiGPU* g, float* buf, size_t n, cudaStream_t stream) {
#ifndef NO_MULTI_GPU
    if (g->world > 1) ncclCheck(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, g->comm, stream));
#endif
    (void)g; (void)buf; (void)n; (void)stream;
}

/* ZeRO-1: in (world * shard) floats -> this rank's shard of the sum over ranks */
static inline void multigpu_reduce_scatter_f32(MultiGPU* g, float* shard_out, const float* in, size_t shard,
                                               cudaStream_t stream) {
#ifndef NO_MULTI_GPU
    if (g->world > 1) ncclCheck(ncclReduceScatter(in, shard_out, shard, ncclFloat, ncclSum, g->comm, stream));
#endif
    (void)g; (void)shard_out; (void)in; (void)shard; (void)stream;
}

/* ZeRO-1: every rank's shard -> the whole (world * shard) buffer on every rank */
static inline void multigpu_allgather_f32(MultiGPU* g, float* out, const float* shard_in, size_t shard,
                                          cudaStream_t stream) {
#ifndef NO_MULTI_GPU
    if (g->world > 1) ncclCheck(ncclAllGather(shard_in, out, shard, ncclFloat, g->comm, stream));
#endif
    (void)g; (void)out; (void)shard_in; (void)shard; (void)stream;
}

/* group several collectives into one launch (the per-layer gradient bucket) */
static inline void multigpu_group_start(MultiGPU* g) {
#ifndef NO_MULTI_GPU
    if (g->world > 1) ncclCheck(ncclGroupStart());
#endif
    (void)g;
}
static inline void multigpu_group_end(MultiGPU* g) {
#ifndef NO_MULTI_GPU
    if (g->world > 1) ncclCheck(ncclGroupEnd());
#endif
    (void)g;
}

/* the sum over ranks of one host double (losses, norms); a device round trip */
static inline double multigpu_sum_double(MultiGPU* g, double v, float* dev_scratch, cudaStream_t stream) {
    if (g->world == 1) return v;
    float f = (float)v;
    cudaCheck(cudaMemcpyAsync(dev_scratch, &f, sizeof(float), cudaMemcpyHostToDevice, stream));
    multigpu_allreduce_sum_f32(g, dev_scratch, 1, stream);
    cudaCheck(cudaMemcpyAsync(&f, dev_scratch, sizeof(float), cudaMemcpyDeviceToHost, stream));
    cudaCheck(cudaStreamSynchronize(stream));
    return f;
}

static inline void multigpu_barrier(MultiGPU* g, float* dev_scratch, cudaStream_t stream) {
    multigpu_sum_double(g, 0.0, dev_scratch, stream);
}

#endif /* MULTIGPU_RENDEZVOUS_ONLY */

#endif
