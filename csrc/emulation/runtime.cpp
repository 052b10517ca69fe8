// The emulated CUDA runtime of cuda.h: emulated GPUs, kernel attributes, and the scheduler that runs a launch's
// threads as fibers on the calling OS thread.
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda.h"

#if defined(__SANITIZE_ADDRESS__)
#define S2S_FAST_EMULATION_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define S2S_FAST_EMULATION_ASAN 1
#endif
#endif

#if defined(S2S_FAST_EMULATION_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace s2s_fast::emulation {

thread_local const ThreadContext* current_thread = nullptr;

namespace {

// ---- the emulated GPUs ----

struct Gpu {
    const char* key;
    int multiprocessors;
    int shared_per_block_optin;
    int shared_per_multiprocessor;
};

// H100 SXM5 and H200 (both GH100 with 132 SMs): 228 KiB of shared memory per SM, 227 KiB of it for one block.
constexpr Gpu kGpus[] = {{"h100", 132, 232448, 233472}, {"h200", 132, 232448, 233472}};
constexpr int kSharedPerBlockDefault = 48 * 1024;
constexpr int kReservedSharedPerBlock = 1024;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxThreadsPerMultiprocessor = 2048;
constexpr int kMaxBlocksPerMultiprocessor = 32;
constexpr int kRegisters = 65536;  // per multiprocessor and per block

thread_local cudaError_t last_error = cudaSuccess;
// What the emulation found for the last error it reported (kept when cudaGetLastError clears last_error).
thread_local cudaError_t described_error = cudaSuccess;
thread_local std::string described_message;

cudaError_t record(cudaError_t error, const std::string& message = {}) {
    if (error != cudaSuccess) {
        last_error = error;
        described_error = error;
        described_message = message;
    }
    return error;
}

// The GPU S2S_FAST_CUDA_EMULATE names (read at every query, so that a test may switch it), or nullptr.
const Gpu* emulated_gpu() {
    const char* value = std::getenv("S2S_FAST_CUDA_EMULATE");
    const std::string name = value == nullptr ? "" : value;
    if (name.empty() || name == "1") return &kGpus[0];
    for (const Gpu& gpu : kGpus)
        if (name == gpu.key) return &gpu;
    return nullptr;
}

cudaError_t gpu_or_error(const Gpu** gpu) {
    *gpu = emulated_gpu();
    if (*gpu != nullptr) return cudaSuccess;
    return record(cudaErrorInvalidDevice, "S2S_FAST_CUDA_EMULATE names no emulated GPU (h100, h200 or 1)");
}

std::mutex attributes_mutex;
std::unordered_map<const void*, int> max_dynamic_shared;

int kernel_max_dynamic_shared(const void* kernel) {
    const std::lock_guard<std::mutex> lock(attributes_mutex);
    const auto found = max_dynamic_shared.find(kernel);
    return found == max_dynamic_shared.end() ? kSharedPerBlockDefault : found->second;
}

int occupancy(const Gpu& gpu, int threads, size_t shared_bytes) {
    if (threads <= 0 || threads > kMaxThreadsPerBlock || shared_bytes > size_t(gpu.shared_per_block_optin)) return 0;
    const int warps_threads = (threads + 31) / 32 * 32;
    int blocks = std::min(kMaxBlocksPerMultiprocessor, kMaxThreadsPerMultiprocessor / warps_threads);
    blocks = std::min<int64_t>(blocks, gpu.shared_per_multiprocessor / int64_t(shared_bytes + kReservedSharedPerBlock));
    return blocks;
}

// ---- scheduling randomness: splitmix64 over (seed, launches since the seed was set) ----

uint64_t splitmix(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

std::mutex seed_mutex;
std::string seed_text;
uint64_t launches_since_seed = 0;

uint64_t launch_seed() {
    const char* value = std::getenv("S2S_FAST_CUDA_EMULATE_SEED");
    const std::string text = value == nullptr ? "0" : value;
    const std::lock_guard<std::mutex> lock(seed_mutex);
    if (text != seed_text) {
        seed_text = text;
        launches_since_seed = 0;
    }
    uint64_t state = std::strtoull(text.c_str(), nullptr, 10) * 0x2545f4914f6cdd1dull + launches_since_seed++;
    return splitmix(state);
}

// ---- fiber stacks: carved from shared mappings, a canary at the bottom of each ----

#if defined(S2S_FAST_EMULATION_ASAN)
constexpr size_t kStackBytes = 256 * 1024;
#else
constexpr size_t kStackBytes = 64 * 1024;
#endif
constexpr size_t kStacksPerMapping = 64;
constexpr uint64_t kCanary = 0x5a17c0de5a17c0deull;
// Free stacks kept with their pages after a launch; the pages of the rest go back to the system.
constexpr size_t kStacksKeptResident = 4096;

struct StackPool {
    std::vector<char*> free;

    char* take() {
        if (free.empty()) {
            void* mapping = mmap(nullptr, kStackBytes * kStacksPerMapping, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (mapping == MAP_FAILED) return nullptr;
            for (size_t i = 0; i < kStacksPerMapping; ++i)
                free.push_back(static_cast<char*>(mapping) + i * kStackBytes);
        }
        char* stack = free.back();
        free.pop_back();
#if defined(S2S_FAST_EMULATION_ASAN)
        // A fiber that ended or failed never unwound its frames: their redzones are still marked.
        ASAN_UNPOISON_MEMORY_REGION(stack, kStackBytes);
#endif
        std::memcpy(stack, &kCanary, sizeof(kCanary));
        return stack;
    }

    void give(char* stack) { free.push_back(stack); }

    void trim() {
        for (size_t i = kStacksKeptResident; i < free.size(); ++i) madvise(free[i], kStackBytes, MADV_DONTNEED);
    }
};

thread_local StackPool stack_pool;

bool canary_intact(const char* stack) {
    uint64_t value;
    std::memcpy(&value, stack, sizeof(value));
    return value == kCanary;
}

// ---- the launch ----

struct Block;
struct Warp;

// A cp.async copy issued and not yet complete: it lands when a wait_group lets it (or the thread ends).
struct PendingCopy {
    void* shared;
    const void* global;
    size_t bytes;
    uint64_t group;
};

struct Fiber {
    ThreadContext context;
    Block* block = nullptr;
    Warp* warp = nullptr;
    int lane = 0;
    uint64_t collectives = 0;  // warp collectives this lane has entered
    bool done = false;
    std::vector<PendingCopy> pending_copies;
    uint64_t copy_groups = 0;  // groups committed so far; copies issued after the last commit belong to the next
    char* stack = nullptr;
#if defined(__x86_64__)
    void* stack_pointer = nullptr;
#else
    ucontext_t context_state;
#endif
#if defined(S2S_FAST_EMULATION_ASAN)
    void* fake_stack = nullptr;
#endif
};

struct Warp {
    // Two generations of collectives in flight at most: a lane waits at generation g + 1 until all have left g.
    LaneWords slots[2][32];
    unsigned arrived[2] = {0, 0};
    unsigned mask[2] = {0, 0};
    Collective kind[2] = {Collective::kShuffle, Collective::kShuffle};
    Fiber* waiting[2][32] = {};
    unsigned present = 0;
    unsigned exited = 0;
};

struct Block {
    dim3 index;
    std::unique_ptr<unsigned char[]> shared;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<Fiber*> at_barrier;
    std::vector<Fiber*> runnable;
    bool ready = false;  // listed in Launch::ready, or the block being run
    int live = 0;
    // Under a prioritised schedule, the runnable thread of the highest-priority warp runs next; the priorities are
    // drawn again at every block barrier.
    std::vector<uint64_t> warp_priority;
};

struct Launch {
    // Half the launches (by their seed) run prioritised: one warp races ahead to its next block barrier while the
    // others wait, the order most likely to show a missing barrier; the others pick runnable threads uniformly.
    bool prioritised = false;
    dim3 grid;
    dim3 block_dim;
    size_t shared_bytes = 0;
    bool cooperative = false;
    const std::function<void()>* body = nullptr;
    uint64_t random_state = 0;
    // Blocks with runnable threads. The scheduler runs one block until none of its threads can run, then moves to
    // another at random: any interleaving of blocks between barriers is a schedule a GPU may pick, and staying in
    // one block keeps the working set (stacks, fibers) small.
    std::vector<Block*> ready;
    std::vector<std::unique_ptr<Block>> running;
    std::vector<dim3> queued;  // blocks not started yet (ordinary launches start them as others finish)
    std::vector<Fiber*> at_grid;
    int live = 0;
    int blocks_fully_exited = 0;
    std::string failure;
};

thread_local Launch* launch_now = nullptr;
thread_local Fiber* fiber_now = nullptr;
#if defined(__x86_64__)
thread_local void* scheduler_stack_pointer = nullptr;
#else
thread_local ucontext_t scheduler_context;
#endif
#if defined(S2S_FAST_EMULATION_ASAN)
thread_local void* scheduler_fake_stack = nullptr;
thread_local const void* scheduler_stack_bottom = nullptr;
thread_local size_t scheduler_stack_size = 0;
#endif

std::string where(const Fiber& fiber) {
    const ThreadContext& c = fiber.context;
    return "block (" + std::to_string(c.block_idx.x) + ", " + std::to_string(c.block_idx.y) + ", " +
           std::to_string(c.block_idx.z) + ") thread (" + std::to_string(c.thread_idx.x) + ", " +
           std::to_string(c.thread_idx.y) + ", " + std::to_string(c.thread_idx.z) + ")";
}

void set_failure(Launch& launch, const std::string& message) {
    if (launch.failure.empty()) launch.failure = message;
}

void make_runnable(Launch& launch, Fiber* fiber) {
    Block& block = *fiber->block;
    block.runnable.push_back(fiber);
    if (!block.ready) {
        block.ready = true;
        launch.ready.push_back(&block);
    }
}

// A random element of `items`, removed from it (order is not kept).
template <typename T>
T take_random(std::vector<T>& items, uint64_t& random_state) {
    const size_t pick = size_t(splitmix(random_state) % items.size());
    T item = items[pick];
    items[pick] = items.back();
    items.pop_back();
    return item;
}

}  // namespace
}  // namespace s2s_fast::emulation

// ---- switching between the scheduler and a fiber ----

extern "C" [[noreturn]] void s2s_fast_emulation_fiber_entry();

#if defined(__x86_64__)
// Saves the callee-saved registers and the floating-point control words on the current stack, stores the stack
// pointer in *save, and continues on the stack `load` (System V AMD64 ABI).
extern "C" void s2s_fast_emulation_switch(void** save, void* load);
asm(R"(
    .text
    .globl s2s_fast_emulation_switch
    .hidden s2s_fast_emulation_switch
    .type s2s_fast_emulation_switch, @function
s2s_fast_emulation_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size s2s_fast_emulation_switch, .-s2s_fast_emulation_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif

namespace s2s_fast::emulation {
namespace {

void prepare_fiber(Fiber& fiber) {
#if defined(__x86_64__)
    // The first switch pops six zero registers and the control words, then returns into the entry function with
    // the stack aligned as after a call.
    auto* top = reinterpret_cast<uint64_t*>(fiber.stack + kStackBytes);
    uint32_t control[2] = {0, 0};
    asm volatile("stmxcsr %0" : "=m"(control[0]));
    asm volatile("fnstcw %0" : "=m"(control[1]));
    *--top = 0;
    *--top = reinterpret_cast<uint64_t>(&s2s_fast_emulation_fiber_entry);
    for (int i = 0; i < 6; ++i) *--top = 0;
    uint64_t packed;
    std::memcpy(&packed, control, sizeof(packed));
    *--top = packed;
    fiber.stack_pointer = top;
#else
    getcontext(&fiber.context_state);
    fiber.context_state.uc_stack.ss_sp = fiber.stack + sizeof(kCanary) * 2;
    fiber.context_state.uc_stack.ss_size = kStackBytes - sizeof(kCanary) * 2;
    fiber.context_state.uc_link = nullptr;
    makecontext(&fiber.context_state, reinterpret_cast<void (*)()>(&s2s_fast_emulation_fiber_entry), 0);
#endif
}

// Scheduler -> fiber; returns when the fiber yields or ends.
void resume(Fiber& fiber) {
    fiber_now = &fiber;
    current_thread = &fiber.context;
#if defined(S2S_FAST_EMULATION_ASAN)
    __sanitizer_start_switch_fiber(&scheduler_fake_stack, fiber.stack, kStackBytes);
#endif
#if defined(__x86_64__)
    s2s_fast_emulation_switch(&scheduler_stack_pointer, fiber.stack_pointer);
#else
    swapcontext(&scheduler_context, &fiber.context_state);
#endif
#if defined(S2S_FAST_EMULATION_ASAN)
    __sanitizer_finish_switch_fiber(scheduler_fake_stack, nullptr, nullptr);
#endif
    fiber_now = nullptr;
    current_thread = nullptr;
}

// Lands the thread's cp.async copies of the groups before `group` (copies not yet committed belong to group
// copy_groups).
void land_copies(Fiber& fiber, uint64_t group) {
    auto pending = fiber.pending_copies.begin();
    while (pending != fiber.pending_copies.end()) {
        if (pending->group < group) {
            std::memcpy(pending->shared, pending->global, pending->bytes);
            pending = fiber.pending_copies.erase(pending);
        } else {
            ++pending;
        }
    }
}

// Completes the thread's cp.async copies of every group but the newest `keep` committed ones.
void complete_copies(Fiber& fiber, uint64_t keep) {
    land_copies(fiber, fiber.copy_groups > keep ? fiber.copy_groups - keep : 0);
}

// Fiber -> scheduler; returns when the scheduler resumes this fiber (never, for a fiber that ended or failed).
void yield(bool ending = false) {
    Fiber& fiber = *fiber_now;
    // A cp.async copy lands at some point between its issue and the wait that needs it: here, at random, when the
    // thread reaches a barrier, so that a copy into a buffer other threads still read shows under some seed.
    if (!ending && !fiber.pending_copies.empty() && (splitmix(launch_now->random_state) & 1))
        land_copies(fiber, UINT64_MAX);
#if defined(S2S_FAST_EMULATION_ASAN)
    __sanitizer_start_switch_fiber(ending ? nullptr : &fiber.fake_stack, scheduler_stack_bottom, scheduler_stack_size);
#else
    (void)ending;
#endif
#if defined(__x86_64__)
    s2s_fast_emulation_switch(&fiber.stack_pointer, scheduler_stack_pointer);
#else
    swapcontext(&fiber.context_state, &scheduler_context);
#endif
#if defined(S2S_FAST_EMULATION_ASAN)
    __sanitizer_finish_switch_fiber(fiber.fake_stack, nullptr, nullptr);
#endif
}

[[noreturn]] void stop_forever() {
    yield(true);
    std::abort();  // a fiber that ended is never resumed
}

void release(Launch& launch, std::vector<Fiber*>& waiting) {
    for (Fiber* fiber : waiting) make_runnable(launch, fiber);
    waiting.clear();
}

bool grid_complete(const Launch& launch) {
    return !launch.at_grid.empty() && int(launch.at_grid.size()) == launch.live && launch.blocks_fully_exited == 0;
}

void thread_exited(Fiber& fiber) {
    Launch& launch = *launch_now;
    Block& block = *fiber.block;
    Warp& warp = *fiber.warp;
    land_copies(fiber, UINT64_MAX);  // a thread's copies all land by the time it ends
    fiber.done = true;
    --block.live;
    --launch.live;
    warp.exited |= 1u << fiber.lane;
    for (int parity = 0; parity < 2; ++parity)
        if (warp.arrived[parity] != 0 && ((warp.mask[parity] >> fiber.lane) & 1u))
            set_failure(launch, where(fiber) +
                                    " exited while lanes of its warp wait for it at a shuffle, mma or "
                                    "__syncwarp (undefined on a GPU)");
    if (!block.at_barrier.empty() && int(block.at_barrier.size()) == block.live) release(launch, block.at_barrier);
    if (block.live == 0 && launch.cooperative) ++launch.blocks_fully_exited;
    if (grid_complete(launch)) release(launch, launch.at_grid);
}

void draw_priorities(Launch& launch, Block& block) {
    for (uint64_t& priority : block.warp_priority) priority = splitmix(launch.random_state);
}

// The runnable thread of the highest-priority warp (a random one of its lanes), removed from the runnable list.
Fiber* take_first_warp(Block& block) {
    size_t best = 0;
    for (size_t i = 1; i < block.runnable.size(); ++i) {
        const uint64_t priority = block.warp_priority[block.runnable[i]->warp - block.warps.data()];
        if (priority > block.warp_priority[block.runnable[best]->warp - block.warps.data()]) best = i;
    }
    Fiber* fiber = block.runnable[best];
    block.runnable[best] = block.runnable.back();
    block.runnable.pop_back();
    return fiber;
}

void start_block(Launch& launch, dim3 index) {
    auto block = std::make_unique<Block>();
    block->index = index;
    const unsigned threads = launch.block_dim.x * launch.block_dim.y * launch.block_dim.z;
    if (launch.shared_bytes > 0) {
        block->shared.reset(new unsigned char[launch.shared_bytes]);
        std::memset(block->shared.get(), 0xff, launch.shared_bytes);
    }
    block->fibers.resize(threads);
    block->warps.resize((threads + 31) / 32);
    block->warp_priority.resize(block->warps.size());
    draw_priorities(launch, *block);
    block->live = int(threads);
    launch.live += int(threads);
    for (unsigned linear = 0; linear < threads; ++linear) {
        Fiber& fiber = block->fibers[linear];
        fiber.context.thread_idx = dim3(linear % launch.block_dim.x, linear / launch.block_dim.x % launch.block_dim.y,
                                        linear / (launch.block_dim.x * launch.block_dim.y));
        fiber.context.block_idx = index;
        fiber.context.block_dim = launch.block_dim;
        fiber.context.grid_dim = launch.grid;
        fiber.block = block.get();
        fiber.warp = &block->warps[linear / 32];
        fiber.lane = int(linear % 32);
        fiber.warp->present |= 1u << fiber.lane;
        fiber.stack = stack_pool.take();
        if (fiber.stack == nullptr) {
            set_failure(launch, "out of memory for the stacks of emulated threads");
            fiber.done = true;
            continue;
        }
        prepare_fiber(fiber);
        make_runnable(launch, &fiber);
    }
    launch.running.push_back(std::move(block));
}

void give_stacks(Block& block) {
    for (Fiber& fiber : block.fibers) {
        if (fiber.stack != nullptr) stack_pool.give(fiber.stack);
        fiber.stack = nullptr;
    }
}

// A block whose threads all ended: its stacks and memory go back, and an ordinary launch starts the next block.
void finish_block(Launch& launch, Block* block) {
    give_stacks(*block);
    if (launch.cooperative) return;
    launch.running.erase(
        std::find_if(launch.running.begin(), launch.running.end(),
                     [block](const std::unique_ptr<Block>& running) { return running.get() == block; }));
    if (!launch.queued.empty()) {
        const dim3 next = launch.queued.back();
        launch.queued.pop_back();
        start_block(launch, next);
    }
}

std::string describe_deadlock(const Launch& launch) {
    int at_barrier = 0, at_collective = 0;
    for (const auto& block : launch.running) {
        at_barrier += int(block->at_barrier.size());
        for (const Warp& warp : block->warps)
            for (int parity = 0; parity < 2; ++parity) at_collective += __builtin_popcount(warp.arrived[parity]);
    }
    std::string message = "deadlock: " + std::to_string(launch.live) + " live threads can never continue (" +
                          std::to_string(at_barrier) + " at __syncthreads, " + std::to_string(at_collective) +
                          " at warp collectives, " + std::to_string(launch.at_grid.size()) + " at grid.sync())";
    if (launch.blocks_fully_exited > 0 && !launch.at_grid.empty())
        message += "; grid.sync() waits for " + std::to_string(launch.blocks_fully_exited) +
                   " block(s) whose threads all exited";
    return message + ": a barrier that some threads never reach";
}

cudaError_t run(Launch& launch) {
    launch_now = &launch;
    Block* block = nullptr;  // the block being run: out of launch.ready, its flag still set
    while (launch.failure.empty()) {
        if (block == nullptr || block->runnable.empty()) {
            if (block != nullptr) block->ready = false;
            if (launch.ready.empty()) break;
            block = take_random(launch.ready, launch.random_state);
        }
        Fiber* fiber = launch.prioritised ? take_first_warp(*block) : take_random(block->runnable, launch.random_state);
        resume(*fiber);
        if (!canary_intact(fiber->stack))
            set_failure(launch, where(*fiber) + " overflowed its " + std::to_string(kStackBytes / 1024) +
                                    " KiB emulation stack");
        if (fiber->done && block->live == 0) {
            finish_block(launch, block);
            block = nullptr;
        }
    }
    if (launch.failure.empty() && launch.live > 0) launch.failure = describe_deadlock(launch);
    for (const auto& block : launch.running) give_stacks(*block);
    stack_pool.trim();
    launch_now = nullptr;
    if (!launch.failure.empty()) return record(cudaErrorLaunchFailure, launch.failure);
    return cudaSuccess;
}

bool valid_dims(dim3 grid, dim3 block) {
    const uint64_t threads = uint64_t(block.x) * block.y * block.z;
    return threads >= 1 && threads <= kMaxThreadsPerBlock && block.x <= 1024 && block.y <= 1024 && block.z <= 64 &&
           grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 && grid.z <= 65535;
}

}  // namespace

cudaError_t set_max_dynamic_shared(const void* kernel, int bytes) {
    const Gpu* gpu;
    if (gpu_or_error(&gpu) != cudaSuccess) return last_error;
    if (bytes < 0 || bytes > gpu->shared_per_block_optin)
        return record(cudaErrorInvalidValue,
                      "cudaFuncSetAttribute: " + std::to_string(bytes) +
                          " bytes of dynamic shared memory is over the GPU's opt-in maximum of " +
                          std::to_string(gpu->shared_per_block_optin));
    const std::lock_guard<std::mutex> lock(attributes_mutex);
    max_dynamic_shared[kernel] = bytes;
    return cudaSuccess;
}

cudaError_t max_active_blocks(int* blocks, const void* kernel, int threads, size_t shared_bytes) {
    (void)kernel;
    const Gpu* gpu;
    if (gpu_or_error(&gpu) != cudaSuccess) return last_error;
    *blocks = occupancy(*gpu, threads, shared_bytes);
    return cudaSuccess;
}

cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t shared_bytes, bool cooperative,
                   const std::function<void()>& body) {
    if (launch_now != nullptr)
        return record(cudaErrorNotSupported, "a kernel launched another kernel (dynamic parallelism)");
    const Gpu* gpu;
    if (gpu_or_error(&gpu) != cudaSuccess) return last_error;
    if (!valid_dims(grid, block)) return record(cudaErrorInvalidConfiguration, "grid or block dimensions out of range");
    const int allowed = kernel_max_dynamic_shared(kernel);
    if (shared_bytes > size_t(allowed))
        return record(cudaErrorInvalidValue,
                      std::to_string(shared_bytes) + " bytes of dynamic shared memory is over the kernel's limit of " +
                          std::to_string(allowed) + " (raise it with cudaFuncSetAttribute MaxDynamicSharedMemorySize)");
    const int threads = int(block.x * block.y * block.z);
    const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
    if (cooperative && blocks > uint64_t(occupancy(*gpu, threads, shared_bytes)) * gpu->multiprocessors)
        return record(cudaErrorCooperativeLaunchTooLarge, "a cooperative launch of " + std::to_string(blocks) +
                                                              " blocks is more than the GPU holds at once");
    Launch state;
    state.grid = grid;
    state.block_dim = block;
    state.shared_bytes = shared_bytes;
    state.cooperative = cooperative;
    state.body = &body;
    state.random_state = launch_seed();
    state.prioritised = splitmix(state.random_state) & 1;
    std::vector<dim3> order;
    order.reserve(blocks);
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) order.emplace_back(x, y, z);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[splitmix(state.random_state) % i]);
    // Ordinary launches keep a few blocks in flight at once, starting one as another finishes.
    constexpr size_t kBlocksInFlight = 4;
    const size_t first = cooperative ? order.size() : std::min(order.size(), kBlocksInFlight);
    state.queued.assign(order.begin() + ptrdiff_t(first), order.end());
    for (size_t i = 0; i < first; ++i) start_block(state, order[i]);
    return run(state);
}

void sync_block() {
    Fiber& fiber = *fiber_now;
    Block& block = *fiber.block;
    block.at_barrier.push_back(&fiber);
    if (int(block.at_barrier.size()) == block.live) {
        release(*launch_now, block.at_barrier);
        draw_priorities(*launch_now, block);
    }
    yield();
}

void sync_grid() {
    Launch& launch = *launch_now;
    if (!launch.cooperative) fail("grid.sync() in a kernel that was not launched cooperatively");
    launch.at_grid.push_back(fiber_now);
    if (grid_complete(launch)) release(launch, launch.at_grid);
    yield();
}

unsigned char* block_shared_memory() { return fiber_now->block->shared.get(); }

int lane_id() { return fiber_now->lane; }

void async_copy(void* shared, const void* global, size_t bytes) {
    Fiber& fiber = *fiber_now;
    fiber.pending_copies.push_back({shared, global, bytes, fiber.copy_groups});
}

void async_commit() { ++fiber_now->copy_groups; }

void async_wait(int newest_pending) { complete_copies(*fiber_now, uint64_t(newest_pending)); }

const LaneWords* warp_collective(unsigned mask, Collective kind, const uint32_t* words, int count) {
    Fiber& fiber = *fiber_now;
    Warp& warp = *fiber.warp;
    const unsigned lane_bit = 1u << fiber.lane;
    if (!(mask & lane_bit)) fail("a warp collective's mask leaves out the lane that calls it");
    if (mask & ~warp.present) fail("a warp collective's mask names lanes past the end of the block");
    if (mask & warp.exited) fail("a warp collective's mask names lanes that have exited (undefined on a GPU)");
    const int parity = int(fiber.collectives++ & 1);
    if (warp.arrived[parity] == 0) {
        warp.mask[parity] = mask;
        warp.kind[parity] = kind;
    } else if (warp.mask[parity] != mask || warp.kind[parity] != kind) {
        fail(
            "the lanes of a warp reached different collectives (shuffle, mma or __syncwarp with other masks): "
            "divergent warp-synchronous code");
    }
    std::memcpy(warp.slots[parity][fiber.lane].words, words, sizeof(uint32_t) * size_t(count));
    warp.arrived[parity] |= lane_bit;
    warp.waiting[parity][fiber.lane] = &fiber;
    if (warp.arrived[parity] == mask) {
        for (int lane = 0; lane < 32; ++lane)
            if ((mask >> lane) & 1u) make_runnable(*launch_now, warp.waiting[parity][lane]);
        warp.arrived[parity] = 0;
    }
    yield();
    return warp.slots[parity];
}

void fail(const char* message) {
    set_failure(*launch_now, where(*fiber_now) + ": " + message);
    stop_forever();
}

}  // namespace s2s_fast::emulation

extern "C" void s2s_fast_emulation_fiber_entry() {
    using namespace s2s_fast::emulation;
#if defined(S2S_FAST_EMULATION_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack_bottom, &scheduler_stack_size);
#endif
    (*launch_now->body)();
    thread_exited(*fiber_now);
    stop_forever();
}

// ---- runtime API ----

using namespace s2s_fast::emulation;

cudaError_t cudaGetDevice(int* device) {
    const Gpu* gpu;
    if (gpu_or_error(&gpu) != cudaSuccess) return last_error;
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
    const Gpu* gpu;
    *count = 0;
    if (gpu_or_error(&gpu) != cudaSuccess) return last_error;
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
    const Gpu* gpu;
    if (gpu_or_error(&gpu) != cudaSuccess) return last_error;
    if (device != 0) return record(cudaErrorInvalidDevice, "the emulation has one device, 0");
    switch (attribute) {
        case cudaDevAttrMaxThreadsPerBlock: *value = kMaxThreadsPerBlock; break;
        case cudaDevAttrMaxSharedMemoryPerBlock: *value = kSharedPerBlockDefault; break;
        case cudaDevAttrWarpSize: *value = 32; break;
        case cudaDevAttrMaxRegistersPerBlock: *value = kRegisters; break;
        case cudaDevAttrMultiProcessorCount: *value = gpu->multiprocessors; break;
        case cudaDevAttrMaxThreadsPerMultiProcessor: *value = kMaxThreadsPerMultiprocessor; break;
        case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
        case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
        case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = gpu->shared_per_multiprocessor; break;
        case cudaDevAttrMaxRegistersPerMultiprocessor: *value = kRegisters; break;
        case cudaDevAttrCooperativeLaunch: *value = 1; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = gpu->shared_per_block_optin; break;
        case cudaDevAttrMaxBlocksPerMultiprocessor: *value = kMaxBlocksPerMultiprocessor; break;
        case cudaDevAttrReservedSharedMemoryPerBlock: *value = kReservedSharedPerBlock; break;
        default: return record(cudaErrorInvalidValue, "a device attribute the emulation does not know");
    }
    return cudaSuccess;
}

cudaError_t cudaGetLastError() {
    const cudaError_t error = last_error;
    last_error = cudaSuccess;
    return error;
}

cudaError_t cudaPeekAtLastError() { return last_error; }

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

const char* cudaGetErrorString(cudaError_t error) {
    static thread_local std::string text;
    const char* name = "unknown error";
    switch (error) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: name = "invalid argument"; break;
        case cudaErrorMemoryAllocation: name = "out of memory"; break;
        case cudaErrorInvalidConfiguration: name = "invalid configuration argument"; break;
        case cudaErrorInvalidDeviceFunction: name = "invalid device function"; break;
        case cudaErrorInvalidDevice: name = "invalid device ordinal"; break;
        case cudaErrorLaunchOutOfResources: name = "too many resources requested for launch"; break;
        case cudaErrorLaunchFailure: name = "unspecified launch failure"; break;
        case cudaErrorCooperativeLaunchTooLarge: name = "too many blocks in cooperative launch"; break;
        case cudaErrorNotSupported: name = "operation not supported"; break;
    }
    text = name;
    if (error == described_error && !described_message.empty()) text += " (CUDA emulation: " + described_message + ")";
    return text.c_str();
}
