/*
 * test_rendezvous.c: the multi-GPU process group and rendezvous of llmc/multigpu.h, without CUDA or NCCL: several
 * local processes (fork) exchange a 128-byte id (the size of an ncclUniqueId) through the file and the TCP
 * rendezvous, and the rank / world / local rank come from torchrun's and Slurm's environment variables.
 *   cc -O1 -std=c11 -D_POSIX_C_SOURCE=200809L -o test_rendezvous test_rendezvous.c
 */
#define _DEFAULT_SOURCE
#define MULTIGPU_RENDEZVOUS_ONLY
#include "llmc/multigpu.h"

#include <sys/wait.h>

static int passed = 0, failed = 0;
static void check(int ok, const char* what) {
    printf("%s %s\n", ok ? "[ OK ]" : "[FAIL]", what);
    if (ok) passed++; else failed++;
}

#define IDLEN 128

/* world processes exchange rank 0's id through addr; each child exits 0 iff it received exactly rank 0's bytes */
static int run_world(const char* addr, int world) {
    unsigned char want[IDLEN];
    for (int i = 0; i < IDLEN; i++) want[i] = (unsigned char)(i * 37 + getpid());
    pid_t pids[16];
    fflush(stdout);
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            unsigned char id[IDLEN];
            if (r == 0) memcpy(id, want, IDLEN);
            else memset(id, 0, IDLEN);
            if (r > 0) { struct timespec ts = {0, 20000000L * r}; nanosleep(&ts, NULL); } /* mixed arrival order */
            rendezvous(id, IDLEN, addr, r, world);
            _exit(memcmp(id, want, IDLEN) == 0 ? 0 : 3);
        }
    }
    int ok = 1;
    for (int r = 0; r < world; r++) {
        int st = 0;
        waitpid(pids[r], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = 0;
    }
    return ok;
}

static void clear_env(void) {
    const char* vars[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS",
                          "SLURM_LOCALID", "SLURM_STEP_ID", "SLURM_JOB_ID", "MAMBA2_RENDEZVOUS", "MASTER_ADDR",
                          "MASTER_PORT"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) unsetenv(vars[i]);
}

int main(void) {
    char dir[] = "/tmp/test_rendezvous_XXXXXX";
    if (mkdtemp(dir) == NULL) die("mkdtemp failed");
    clear_env();
    char addr[600], msg[1400];
    snprintf(addr, sizeof(addr), "file:%s/id", dir);
    check(run_world(addr, 4), "file rendezvous: 4 local processes all receive rank 0's 128-byte id");
    /* a stale id file of an earlier job must not be read: under Slurm the path carries the job and step */
    {
        char stale[700];
        snprintf(stale, sizeof(stale), "%s/id2", dir);
        FILE* f = fopenCheck(stale, "wb");
        unsigned char junk[IDLEN] = {0};
        fwriteCheck(junk, 1, IDLEN, f);
        fcloseCheck(f);
        setenv("SLURM_JOB_ID", "4242", 1);
        setenv("SLURM_STEP_ID", "0", 1);
        snprintf(addr, sizeof(addr), "file:%s/id2", dir);
        check(run_world(addr, 3), "file rendezvous under Slurm: a stale id file of another job is not read");
        char p[700];
        rendezvous_file_path(p, sizeof(p), stale);
        snprintf(msg, sizeof(msg), "Slurm file path gets .<job>.<step>: %s", p);
        check(strstr(p, "id2.4242.0") != NULL, msg);
        clear_env();
    }
    int port = 20000 + (int)(getpid() % 20000);
    snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", port);
    check(run_world(addr, 5), "tcp rendezvous: 5 local processes all receive rank 0's id");

    int rank, world, local;
    const char* src;
    setenv("SLURM_PROCID", "5", 1); setenv("SLURM_NTASKS", "8", 1); setenv("SLURM_LOCALID", "1", 1);
    src = process_group_from_env(&rank, &world, &local, 4, -1, -1, -1);
    check(strcmp(src, "single") == 0 && world == 1 && rank == 0,
          "Slurm variables outside a job step (a batch script's own process): a single process");
    setenv("SLURM_STEP_ID", "0", 1); setenv("SLURM_STEP_NUM_TASKS", "8", 1);
    src = process_group_from_env(&rank, &world, &local, 4, -1, -1, -1);
    snprintf(msg, sizeof(msg), "srun: SLURM_PROCID 5, SLURM_STEP_NUM_TASKS 8, SLURM_LOCALID 1 -> %s rank %d of %d, "
             "GPU %d", src, rank, world, local);
    check(strcmp(src, "slurm") == 0 && rank == 5 && world == 8 && local == 1, msg);
    setenv("RANK", "2", 1); setenv("WORLD_SIZE", "3", 1); unsetenv("LOCAL_RANK");
    src = process_group_from_env(&rank, &world, &local, 2, -1, -1, -1);
    snprintf(msg, sizeof(msg), "torchrun variables take precedence: %s rank %d of %d, GPU %d (RANK mod 2 GPUs)", src,
             rank, world, local);
    check(strcmp(src, "torchrun") == 0 && rank == 2 && world == 3 && local == 0, msg);
    src = process_group_from_env(&rank, &world, &local, 2, 1, 4, 1);
    check(strcmp(src, "flags") == 0 && rank == 1 && world == 4 && local == 1, "flags override the environment");
    clear_env();
    char buf[600];
    check(rendezvous_address(NULL, buf, sizeof(buf)) == NULL, "no rendezvous address when nothing is set");
    setenv("MASTER_ADDR", "node17", 1); setenv("MASTER_PORT", "29500", 1);
    const char* a = rendezvous_address(NULL, buf, sizeof(buf));
    check(a && strcmp(a, "tcp:node17:29500") == 0, "MASTER_ADDR / MASTER_PORT give tcp:node17:29500");
    setenv("MAMBA2_RENDEZVOUS", "file:/x", 1);
    a = rendezvous_address(NULL, buf, sizeof(buf));
    check(a && strcmp(a, "file:/x") == 0, "MAMBA2_RENDEZVOUS takes precedence over MASTER_ADDR");
    clear_env();
    /* a bad rank from the environment is an error with a message (child) */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (freopen("/dev/null", "w", stderr) == NULL) _exit(9);
        setenv("RANK", "3", 1); setenv("WORLD_SIZE", "2", 1);
        process_group_from_env(&rank, &world, &local, 1, -1, -1, -1);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 1, "RANK 3 with WORLD_SIZE 2 is refused");
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
