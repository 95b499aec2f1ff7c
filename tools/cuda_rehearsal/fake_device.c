// The CUDA rehearsal's stand-in for a GPU (tools/cuda_rehearsal, docs/GPU.md): preloaded into
// a process whose libcudart has no driver behind it, it answers Jittor's device count with 1
// once DIFFBENCH_FAKE_DEVICE=1 is set (after the import, whose static initialisers must see 0)
// and hands out host memory for device allocations, so that Jittor builds a CUDA graph, writes
// and compiles every kernel of it with nvcc (its executor compiles a whole graph before it runs
// any op) and only then fails, at the first copy or launch that needs a real GPU.
#include <stdlib.h>
#include <string.h>
static int fake(void) { const char* v = getenv("DIFFBENCH_FAKE_DEVICE"); return v && v[0] == '1'; }
int cudaGetDeviceCount(int* count) { *count = fake() ? 1 : 0; return 0; }
static int host_alloc(void** p, size_t n) { *p = aligned_alloc(256, (n + 255) / 256 * 256 + 256); return *p ? 0 : 2; }
int cudaMalloc(void** p, size_t n) { return host_alloc(p, n); }
int cudaMallocHost(void** p, size_t n) { return host_alloc(p, n); }
int cudaMallocManaged(void** p, size_t n, unsigned f) { (void)f; return host_alloc(p, n); }
// Frees are no-ops: Jittor frees some blocks twice at exit where the real runtime would just
// return an error (a real free() aborted with "double free"); the process is short-lived.
int cudaFree(void* p) { (void)p; return 0; }
int cudaFreeHost(void* p) { (void)p; return 0; }
