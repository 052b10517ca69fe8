// The cpu backend's matrix products (the RNN layers and cells, lstm_layer.cpp and gru_layer.cpp; linear.cpp): through
// ATen (at::mm, which on x86 is MKL's GEMM) or through oneDNN (torch's mkldnn::_linear_pointwise on dense tensors),
// one choice for the process, and ATen for products too small to pay oneDNN's cost per call (onednn_from_work).
//
// MKL's float32 GEMM does not take its fast paths on CPUs other than Intel's: on a 2-core AMD EPYC with AVX-512
// (2026-12-04, one thread) a 768 x 768 product ran at 103 GFLOP/s through at::mm and 246 through oneDNN, the layers'
// per-step products h @ W_hh^T 1.2x (B=8, H=256) to 2.2x (B=64-256, H=512) faster through oneDNN, and the layers'
// forward+backward (T=64, B=8-128, H=256-512, one and two threads) 1.4-1.9x faster. So the default is oneDNN for
// float32 on an x86 CPU that is not Intel's, where torch has oneDNN, and ATen elsewhere (float64 always: oneDNN's
// linear takes float32), and never while torch.backends.mkldnn.enabled is off. The vendor is read with GCC's and
// Clang's __builtin_cpu_is, so other compilers (MSVC) default to ATen. s2s_fast::cpu_products reads the choice and
// sets it (s2s_fast.cpu.use_products). Float32 products may run in bfloat16 instead where torch's switch asks for it
// (bf16_products, below).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace s2s_fast::cpu {

using at::Tensor;

inline bool onednn_linear_registered() {
    static const bool registered =
        c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""}).has_value();
    return registered;
}

inline bool x86_not_intel() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return !__builtin_cpu_is("intel");
#else
    return false;
#endif
}

// true: float32 products through oneDNN.
inline std::atomic<bool>& onednn_products() {
    static std::atomic<bool> choice{onednn_linear_registered() && x86_not_intel()};
    return choice;
}

// A 2-d operand oneDNN reads as it is: row-major or its transpose (column-major); anything else as a contiguous copy.
inline Tensor plain_or_transposed(const Tensor& matrix) {
    return matrix.is_contiguous() || matrix.t().is_contiguous() ? matrix : matrix.contiguous();
}

// The fewest multiply-adds (M * K * N) a float32 product must have to go through oneDNN: each call of its linear costs
// about 10 us more than MKL's GEMM (2026-12-04, AMD EPYC, one thread: a [1, 384] x [384, 43] product 12.4 us against
// 2.7), so small products stay with ATen. Through s2s_fast.cpu's linear (a Python op either way), oneDNN ran
// 0.53-0.85x MKL's speed from 0.26M to 1M multiply-adds, 1.0-1.2x at 2M and 1.1-1.5x at 4M ([M, 512] x [512, 512],
// [M, 1024] x [1024, 512], [M, 512] x [512, 8000]), 1.8-2.1x at 64 rows. s2s_fast::cpu_onednn_from_work reads and
// sets it (the tests set 0 to run every product through oneDNN).
inline std::atomic<int64_t>& onednn_from_work() {
    static std::atomic<int64_t> work{2'000'000};
    return work;
}

// From how many rows a float32 product through oneDNN whose weight many products read (a layer's or a decoder's
// per-step products: Product's `repeated`) takes that weight packed once (pack_weight) instead of reordered at each
// call. Measured 2026-12-07 on a 2-core AMD EPYC with AVX2 only (Zen 3), oneDNN's linear called from Python, mostly one
// thread, N x K = 1024 x 256 to 4096 x 1024 (benchmarks/results/cpu-amd-epyc-zen3-2026-12-07/products/): packed
// 0.42-0.90x the plain weight's time at 2-8 rows, 0.86-1.01x at 37-128 rows, but 1.03-1.72x at one row, where
// oneDNN reads a plain weight faster. s2s_fast::cpu_packed_float32_from_rows reads and sets it (a side-by-side timing
// within one process sets it past any batch to leave every weight plain).
inline std::atomic<int64_t>& packed_float32_from_rows() {
    static std::atomic<int64_t> rows{2};
    return rows;
}

// Whether the layers' and linear's float32 weight gradients (weight_gradient with float32_through_onednn) go through
// oneDNN where it is the products' library; else through ATen's GEMM. oneDNN paid for them where it runs AVX-512 and
// MKL's GEMM, off Intel's CPUs, does not (the layers' forward+backward on the AVX-512 AMD EPYC, above). On a 2-core AMD
// EPYC with AVX2 only (Zen 3), where MKL's GEMM runs at oneDNN's rate, grad^T @ x through the route weight_gradient
// picks took 0.81-1.82x ATen's time at one thread (22 of 30 timings slower) and 0.70-2.19x at two (29 of 30), over
// M = 64-8192 rows and N x K = 768 x 192 to 2048 x 512 and 1536 x 960 (2026-12-07,
// benchmarks/results/cpu-amd-epyc-zen3-2026-12-07-weight-gradients/); through ATen, the GRU layer's forward+backward at
// T=64, B=64, H=512 took 0.83x its time at one thread and 0.86x at two, and the layers at B=8 0.91-0.98x; at B=1 (64
// rows) it was mixed, 0.97-1.27x (the cpu LSTM layer at one thread the worst; auto runs torch's own LSTM kernel off
// Intel's CPUs); the g2p trainer's step took 0.93-0.97x (the model with LSTM cells and with GRU cells). Linear's
// vocabulary-wide gradients were not swept. So the default is oneDNN only on CPUs with AVX-512 (AVX512F).
// s2s_fast::cpu_onednn_weight_gradients reads and sets it (the tests set it to run these through oneDNN on every CPU).
inline bool cpu_has_avx512() {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

inline std::atomic<bool>& onednn_weight_gradients() {
    static std::atomic<bool> through{cpu_has_avx512()};
    return through;
}

// Float32 products in bfloat16: both operands rounded to bfloat16, the products summed in float32 inside oneDNN, the
// result rounded to bfloat16 and widened back to float32 (a bias added in float32 after). torch's own switch for
// float32 products on oneDNN asks for this: torch.set_float32_matmul_precision("medium") or
// torch.backends.mkldnn.matmul.fp32_precision = "bf16" (off by default). torch's own CPU products follow it only on
// CPUs with AMX; the cpu backend follows it on every CPU that runs bfloat16 products in hardware (AVX512-BF16 or
// AMX-BF16): on a 2-core AMD EPYC with AVX512-BF16 (Zen 4), 2026-12-06, one thread, bfloat16 products through oneDNN
// ran 2.0-3.4x float32's speed ([4096, 384] x [384, 768] 12.1 against 28.9 ms; [256, 384] x [384, 1536] 1.5 against
// 5.0; [64, 192] x [192, 768] 0.12 against 0.24). Elsewhere oneDNN would emulate bfloat16 slower than float32 and the
// products stay float32. Only products large enough to pay for the rounding change (bf16_pays, below), and never while
// torch.backends.mkldnn is off. On CPUs with AMX torch's own at::mm follows the same switch at every size (2026-12-07,
// the 2-core Xeon, benchmarks/results/cpu-intel-xeon-amx-2026-12-07-torch-bf32/: relative error 2.1-2.5e-3 against
// float32's 4e-7 at 1-64 rows), so there the products this file sends to ATen run in bfloat16 too, rounded by torch
// at each call (at 1-8 rows 1.2-6.3x float32's time): the size rules choose between oneDNN's bfloat16 routes and
// torch's, not float32.
// bf16_products_forced: -1 follows that rule, 0 never, 1 on any CPU (the tests: the same numbers on every machine).
inline std::atomic<int>& bf16_products_forced() {
    static std::atomic<int> forced{-1};
    return forced;
}

inline bool cpu_runs_bf16_products() {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    __builtin_cpu_init();
    static const bool runs = __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
    return runs;
#elif (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();  // GCC before 12 and Clang: AVX512-BF16 (all CPUs with AMX have it too)
    static const bool runs = __builtin_cpu_supports("avx512bf16");
    return runs;
#else
    return false;
#endif
}

// Whether oneDNN can run bfloat16 products here at all: torch's oneDNN linear takes bfloat16 on x86 CPUs with AVX-512
// (BW, VL and DQ), emulating the bfloat16 products where AVX512-BF16 is missing.
inline bool cpu_can_run_bf16_products() {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

// torch's switch: the per-backend setting from torch 2.10 on (older torches: the string of
// set_float32_matmul_precision).
inline bool torch_asks_bf16_products() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
    return at::globalContext().float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL) ==
           at::Float32Precision::BF16;
#else
    return at::globalContext().float32MatmulPrecision() == at::Float32MatmulPrecision::MEDIUM;
#endif
}

// Whether torch's own float32 products (at::mm) run in bfloat16 now: on a CPU with AMX-BF16 while torch's switch asks
// for it (the comment above bf16_products_forced).
inline bool torch_rounds_its_products() {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    __builtin_cpu_init();
    static const bool amx = __builtin_cpu_supports("amx-bf16");
    return amx && at::globalContext().userEnabledMkldnn() && torch_asks_bf16_products();
#else
    return false;
#endif
}

// Whether float32 products that go through oneDNN run in bfloat16 now (read by each Product when it is made, so
// once per op call for its per-step products): never while torch.backends.mkldnn is off.
inline bool bf16_products() {
    if (!at::globalContext().userEnabledMkldnn()) return false;
    const int forced = bf16_products_forced().load();
    if (forced >= 0) return forced == 1;
    return cpu_runs_bf16_products() && onednn_linear_registered() && torch_asks_bf16_products();
}

// When a float32 product pays for running in bfloat16 (bf16_products on). Each bfloat16 call through oneDNN's linear
// pays costs that grow with the weight and not with the rows: rounding the weight (where it is rounded for this call)
// and reordering it into oneDNN's blocked layout. A weight packed once (mkldnn::_reorder_linear_weight, for a layer's
// per-step products) skips both at each call; a product used once pays both. Measured 2026-12-06 on a 2-core Intel
// Xeon with AMX (benchmarks/cpu_product_routes.py: each route timed in a C++ loop over M = 1-128 rows and weights
// N x K = 1024 x 256, 256 x 1024, 1536 x 384, 384 x 1536, 2048 x 512, 512 x 2048, 1536 x 960, 960 x 1536):
// - packed: 20-25 us a call at one to eight rows on the 256 x 1024 weights, 35-42 on the 1536 x 384 ones, where
//   ATen's float32 ran 9-28 and 49-95. It caught up with ATen at about 2M multiply-adds per thread (one thread:
//   0.82-0.91x ATen's time at 2.1M, 1.45-1.46x at 1.05M; two threads: 0.70-0.95x at 4.2-4.7M, but 1.17x on 1024 x 256);
//   weights of 1.05M and 1.47M elements ran under ATen's time at one row at both thread counts (0.50-0.73x), 0.59M
//   ones not at two threads (1.8x).
// - rounded at each call ("plain"): 93-96 us a call at one row on the 256 x 1024 weights, 255-266 on the 1536 x 384
//   ones, 566-572 on the 1536 x 960 ones, so bfloat16 paid only from about 48 rows whatever the weight (one thread:
//   0.66-0.98x ATen's time at 48 rows, 0.88-1.27x at 32; two threads: 0.65-0.88x at 48 rows but for 384 x 1536,
//   1.1x).
// So a product runs in bfloat16 from bf16_from_work multiply-adds per torch thread (M * K * N / threads), packed also
// with a weight of kPackedBf16FromWeight elements, and a product whose weight is rounded at each call only from
// kPlainBf16FromRows rows as well. s2s_fast::cpu_bf16_from_work reads and sets bf16_from_work; 0 sends every product to
// bfloat16, the rows' rule too (the tests).
inline std::atomic<int64_t>& bf16_from_work() {
    static std::atomic<int64_t> work{2'000'000};
    return work;
}
constexpr int64_t kPackedBf16FromWeight = 1 << 20;
constexpr int64_t kPlainBf16FromRows = 48;
// A weight's gradient grad^T @ x over M rows (weight_gradient) rounds both operands, M x (N + K) elements, for N x K
// outputs, so it pays later than a product whose rows are its outputs' (one thread: at 48 rows 1.04-1.63x float32's
// time, at 64 rows 0.70-1.32x, at 128 rows 0.50-0.89x; two threads: at 128 rows 0.66-1.32x, at 256 rows 0.39-0.87x;
// 2026-12-07, the 2-core Intel Xeon with AMX, N x K = 768 x 192 to 1536 x 960, benchmarks/results/
// cpu-intel-xeon-amx-2026-12-07-weight-gradients/): in bfloat16 from kGradientBf16FromRows rows per torch thread.
constexpr int64_t kGradientBf16FromRows = 128;

// Whether a float32 product of `rows` x `weight_elements` (M x K * N) pays for running in bfloat16 with its weight
// `packed` once or rounded at each call (bf16_from_work).
inline bool bf16_pays(int64_t rows, int64_t weight_elements, bool packed) {
    const int64_t per_thread = bf16_from_work().load();
    if (per_thread == 0) return true;
    const bool enough = rows * weight_elements >= per_thread * std::max<int64_t>(1, at::get_num_threads());
    // Where torch rounds its own products (AMX), the ATen route is no float32 product either, and a packed weight's
    // product ran faster at every size (0.30-0.86x torch's time at 1-8 rows: the sweep in
    // benchmarks/results/cpu-intel-xeon-amx-2026-12-07-torch-bf32/).
    if (packed) return enough || weight_elements >= kPackedBf16FromWeight || torch_rounds_its_products();
    return enough && rows >= kPlainBf16FromRows;
}

// Whether a weight's gradient over `rows` rows with `weight_elements` outputs pays for running in bfloat16 (0 work:
// every one, as bf16_pays).
inline bool gradient_bf16_pays(int64_t rows, int64_t weight_elements) {
    if (bf16_from_work().load() == 0) return true;
    return bf16_pays(rows, weight_elements, /*packed=*/false) &&
           rows >= kGradientBf16FromRows * std::max<int64_t>(1, at::get_num_threads());
}

// Whether float32 products with the right operand (or weight) `right` may run in bfloat16 now: float32, not empty,
// bf16_products() on (each product then by bf16_pays).
inline bool bf16_operand(const Tensor& right) {
    return right.scalar_type() == at::kFloat && right.numel() > 0 && bf16_products();
}

// Where a product goes: ATen's GEMM, oneDNN's linear in float32, or oneDNN's linear in bfloat16.
enum class Route { aten, onednn, onednn_bf16 };

// The route of a product of `rows` x `weight_elements` (M x K * N) multiply-adds in `dtype`: float32 with `bf16` =
// bf16_products() in bfloat16 where bf16_pays (`packed`: its weight packed once), else through oneDNN in float32 where
// oneDNN is the products' library and the work is at least onednn_from_work; ATen otherwise, and for any other dtype,
// an empty product, or torch.backends.mkldnn off.
inline Route product_route(at::ScalarType dtype, int64_t rows, int64_t weight_elements, bool bf16,
                           bool packed = false) {
    const int64_t work = rows * weight_elements;
    if (dtype != at::kFloat || work <= 0 || !at::globalContext().userEnabledMkldnn()) return Route::aten;
    if (bf16 && bf16_pays(rows, weight_elements, packed)) return Route::onednn_bf16;
    if (work < onednn_from_work().load()) return Route::aten;
    return onednn_products().load() ? Route::onednn : Route::aten;
}

// x [M, K] @ weight^T (+ bias) through oneDNN's linear: x and weight [N, K] each row- or column-major, or the weight
// packed (pack_weight).
inline Tensor onednn_linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
    static const c10::OperatorHandle op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    torch::jit::Stack stack{plain_or_transposed(x), weight.is_mkldnn() ? weight : plain_or_transposed(weight),
                            bias ? c10::IValue(bias->contiguous()) : c10::IValue(),
                            std::string("none"), c10::List<std::optional<at::Scalar>>(), c10::IValue()};
    op.callBoxed(&stack);
    return stack[0].toTensor();
}

// A bfloat16 or float32 weight [N, K] (contiguous) reordered once into oneDNN's blocked layout for its linear
// (mkldnn::_reorder_linear_weight, an opaque mkldnn tensor), so that its products skip the reorder each call does with
// a plain weight (bf16_from_work, packed_float32_from_rows); the weight as it is where torch lacks that op.
inline Tensor pack_weight(const Tensor& weight) {
    static const std::optional<c10::OperatorHandle> reorder =
        c10::Dispatcher::singleton().findSchema({"mkldnn::_reorder_linear_weight", ""});
    if (!reorder) return weight;
    torch::jit::Stack stack{weight, c10::IValue()};
    reorder->callBoxed(&stack);
    return stack[0].toTensor();
}

// Whether KeptWeights keeps packed weights across calls (s2s_fast::cpu_keep_weights; on by default).
inline std::atomic<bool>& keep_weights() {
    static std::atomic<bool> keep{true};
    return keep;
}

// Packed bfloat16 weights kept across op calls (a Product made `across_calls`): the inference calls of the layers and
// cells, which would round and reorder the same weight at each call (a decoder's cell at every step of a search). A
// weight is known by its float32 source tensor's storage, data pointer, offset, sizes, strides and version, and by
// kFingerprint of its values spread over it: a weight updated in place is another (its version moves; an update through
// an alias with a version of its own, as .data, numpy or DLPack, is seen only where it changes a sampled value:
// s2s_fast.cpu.clear_kept_weights after such an update, or keep_weights(False)). The first call that meets a weight
// records it; from the second on its products route as packed ones, and the first bfloat16 product packs and keeps it
// (so weights made anew at each call, as weight_norm's, never pay for packing). The storage is held weakly: a freed
// weight's entry is dropped at the next lookup, never matched by a new tensor at its address. At most kKeptWeights
// entries, the least recently used dropped first; s2s_fast::cpu_clear_kept_weights drops them all, and
// s2s_fast::cpu_keep_weights turns keeping off. Inference tensors (no version counter) are never kept.
class KeptWeights {
   public:
    static constexpr size_t kKeptWeights = 64;
    static constexpr int64_t kFingerprint = 64;

    static KeptWeights& instance() {
        static KeptWeights* kept = new KeptWeights;  // never destroyed: its tensors must not outlive oneDNN at exit
        return *kept;
    }

    static bool keepable(const Tensor& source) {
        return keep_weights().load() && source.scalar_type() == at::kFloat && source.has_storage() &&
               source.layout() == at::kStrided && source.device().is_cpu() && !source.is_inference() &&
               source.numel() > 0;
    }

    struct Key;

    // What `source` is known by now.
    static Key key_of(const Tensor& source);

    // Whether an earlier call met `source`, known by `key`, as it is now (its products may then route as packed); a
    // first meeting is recorded.
    bool seen(const Tensor& source, const Key& key) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (find(key) != entries_.end()) return true;
        insert(source, key, Tensor());
        return false;
    }

    // The packed weight of `source` (keepable, known by `key`), made by `make` where none is kept for it as it is now.
    template <typename Make>
    Tensor get(const Tensor& source, const Key& key, Make make) {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto entry = find(key);
        if (entry != entries_.end() && entry->packed.defined()) return entry->packed;
        Tensor packed = make();
        if (entry != entries_.end()) {
            entry->packed = packed;
        } else {
            insert(source, key, packed);
        }
        return packed;
    }

    // Drops every entry; returns how many there were.
    int64_t clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        const int64_t count = static_cast<int64_t>(entries_.size());
        entries_.clear();
        return count;
    }

    struct Key {
        const c10::StorageImpl* impl;
        const void* data;
        int64_t offset;
        std::vector<int64_t> sizes, strides;
        int64_t version;
        std::vector<float> values;

        bool same_tensor(const Key& other) const {
            return impl == other.impl && data == other.data && offset == other.offset && sizes == other.sizes &&
                   strides == other.strides;
        }
    };

   private:
    struct Entry {
        c10::weak_intrusive_ptr<c10::StorageImpl> storage;
        Key key;
        Tensor packed;  // undefined until a bfloat16 product packs it
    };

    // Values of source: kFingerprint evenly spaced over its elements (the first and the last among them). One in each
    // row of a weight as well cost about 50 us a weight at each call (a decoder cell's whole call took 0.34 ms at B=1),
    // so an update through an alias that misses these is not seen: clear_kept_weights, or keep_weights off.
    static std::vector<float> fingerprint(const Tensor& source) {
        const float* data = source.const_data_ptr<float>();
        const int64_t count = std::min<int64_t>(kFingerprint, source.numel()), last = source.numel() - 1;
        std::vector<float> values;
        values.reserve(count);
        for (int64_t i = 0; i < count; ++i) {
            int64_t rest = count == 1 ? 0 : i * last / (count - 1), offset = 0;  // the element's place in its strides
            for (int64_t dim = source.dim() - 1; dim >= 0; --dim) {
                offset += rest % source.size(dim) * source.stride(dim);
                rest /= source.size(dim);
            }
            values.push_back(data[offset]);
        }
        return values;
    }

    // The live entry of `key` (moved to the front), or end(); drops the entries of freed storages first. Values
    // compare as bits (a NaN matches itself).
    std::list<Entry>::iterator find(const Key& key) {
        entries_.remove_if([](const Entry& entry) { return entry.storage.expired(); });
        for (auto entry = entries_.begin(); entry != entries_.end(); ++entry) {
            const Key& kept = entry->key;
            if (kept.same_tensor(key) && kept.version == key.version && kept.values.size() == key.values.size() &&
                std::memcmp(kept.values.data(), key.values.data(), key.values.size() * sizeof(float)) == 0) {
                entries_.splice(entries_.begin(), entries_, entry);
                return entries_.begin();
            }
        }
        return entries_.end();
    }

    // Records `key` first, dropping the same tensor's older versions and, past kKeptWeights, the least recently used.
    void insert(const Tensor& source, const Key& key, const Tensor& packed) {
        entries_.remove_if([&](const Entry& entry) { return entry.key.same_tensor(key); });
        entries_.push_front(Entry{source.storage().getWeakStorageImpl(), key, packed});
        if (entries_.size() > kKeptWeights) entries_.pop_back();
    }

    std::mutex mutex_;
    std::list<Entry> entries_;
};

inline KeptWeights::Key KeptWeights::key_of(const Tensor& source) {
    return Key{source.storage().unsafeGetStorageImpl(), source.storage().data(), source.storage_offset(),
               source.sizes().vec(), source.strides().vec(), source._version(), fingerprint(source)};
}

// s2s_fast::cpu_clear_kept_weights() -> int: drops every weight KeptWeights keeps; returns how many.
inline int64_t clear_kept_weights_op() { return KeptWeights::instance().clear(); }

// s2s_fast::cpu_keep_weights(bool? keep) -> bool: whether KeptWeights keeps weights, after setting it when given
// (turning it off drops what it kept).
inline bool keep_weights_op(std::optional<bool> keep) {
    if (keep) {
        keep_weights().store(*keep);
        if (!*keep) KeptWeights::instance().clear();
    }
    return keep_weights().load();
}

// A float32 operand [M, K] (contiguous, 2-d) that several products read as their left operand, or a weight gradient
// as its gradient: a layer's gate gradients, whose rows each step's product reads and whose whole the input and weight
// gradients read after the steps. Products in bfloat16 read its rows rounded once, at the first read that takes that
// route, where each would round them again (in the g2p trainer's backward that rounding cost more than a tenth of
// the step: each full read of [T * B, 4H] rounded it anew). Every row must be final when it is first read: the
// backward ops read a step's rows after its kernel wrote them, and the rows a step's product reads past its running
// ones (product_rows) are the later steps', written before it in the backward. One thread at a time.
class LeftRows {
   public:
    explicit LeftRows(Tensor values) : values_(std::move(values)), rounded_rows_(values_.size(0), 0) {
        TORCH_INTERNAL_ASSERT(values_.dim() == 2 && values_.is_contiguous());
    }

    const Tensor& values() const { return values_; }

    // Rows [begin, begin + count) of values in bfloat16 (those not read before rounded now).
    Tensor rounded(int64_t begin, int64_t count) {
        if (!rounded_.defined()) rounded_ = at::empty(values_.sizes(), values_.options().dtype(at::kBFloat16));
        const int64_t end = begin + count;
        for (int64_t row = begin; row < end;) {
            if (rounded_rows_[row]) {
                ++row;
                continue;
            }
            int64_t stop = row;
            while (stop < end && !rounded_rows_[stop]) ++stop;
            rounded_.narrow(0, row, stop - row).copy_(values_.narrow(0, row, stop - row));
            std::fill(rounded_rows_.begin() + row, rounded_rows_.begin() + stop, 1);
            row = stop;
        }
        return rounded_.narrow(0, begin, count);
    }

    // Every row in bfloat16.
    Tensor rounded() { return rounded(0, values_.size(0)); }

   private:
    Tensor values_, rounded_;
    std::vector<uint8_t> rounded_rows_;
};

// Products x @ right (+ bias). oneDNN's linear reads right^T as its weight in whatever strides it has (a transposed
// view ran as fast as a contiguous copy, 2026-12-04, AMD EPYC: [64, 2048] x [2048, 768] 1.02 against 0.92 ms, one
// row 0.08 against 0.07 ms, where copying the 2048 x 768 operand cost 0.62 ms), so a product used once takes it as
// it is; a right operand read by many products (`repeated`: the per-step products of a layer) is made contiguous
// once. That operand, and in bfloat16 (bf16_products) its rounding, are made at the first product that takes its
// route (so that calls whose products all take another never pay for it), a repeated one packed then (in float32 for
// products of packed_float32_from_rows rows or more, beside the plain one the fewer rows read). Each
// product takes its route by its size (product_route): bfloat16, else float32 through oneDNN or ATen. Empty operands
// go to ATen (oneDNN's linear refuses them). The left operand is a tensor, rounded at each bfloat16 product, or rows
// [begin, begin + count) of a LeftRows, rounded once. A Product made `across_calls` (an inference call's) takes its
// packed bfloat16 weight from KeptWeights, and routes as a packed one where an earlier call met that weight. A
// Product serves one thread at a time (making its operands is not guarded).
class Product {
   public:
    explicit Product(const Tensor& right, bool repeated = false, bool across_calls = false)
        : right_(right),
          repeated_(repeated),
          bf16_(bf16_operand(right)),
          across_calls_(across_calls && bf16_ && KeptWeights::keepable(right)),
          key_(across_calls_ ? std::optional<KeptWeights::Key>(KeptWeights::key_of(right)) : std::nullopt),
          packed_(repeated || (across_calls_ && KeptWeights::instance().seen(right, *key_))) {}

    Tensor operator()(const Tensor& x, const std::optional<Tensor>& bias = std::nullopt) const {
        const Route way = route(x);
        return run(way, x, way == Route::onednn_bf16 ? x.to(at::kBFloat16) : Tensor(), bias);
    }

    Tensor operator()(LeftRows& x, int64_t begin, int64_t count) const {
        const Tensor rows = x.values().narrow(0, begin, count);
        const Route way = route(rows);
        return run(way, rows, way == Route::onednn_bf16 ? x.rounded(begin, count) : Tensor(), std::nullopt);
    }

    Tensor operator()(LeftRows& x) const { return (*this)(x, 0, x.values().size(0)); }

    void out(Tensor& result, const Tensor& x, const std::optional<Tensor>& bias = std::nullopt) const {
        const Route way = route(x);
        run_out(result, way, x, way == Route::onednn_bf16 ? x.to(at::kBFloat16) : Tensor(), bias);
    }

    void out(Tensor& result, LeftRows& x, int64_t begin, int64_t count) const {
        const Tensor rows = x.values().narrow(0, begin, count);
        const Route way = route(rows);
        run_out(result, way, rows, way == Route::onednn_bf16 ? x.rounded(begin, count) : Tensor(), std::nullopt);
    }

   private:
    // The product of x on `way`; `rounded` is x in bfloat16 when `way` is onednn_bf16.
    Tensor run(Route way, const Tensor& x, const Tensor& rounded, const std::optional<Tensor>& bias) const {
        switch (way) {
            case Route::onednn_bf16: {
                Tensor result = onednn_linear(rounded, bf16_weight(), {}).to(at::kFloat);
                return bias ? result.add_(*bias) : result;
            }
            case Route::onednn:
                return onednn_linear(x, float32_weight(x.size(0)), bias);
            default:
                return bias ? at::addmm(*bias, x, right_) : at::mm(x, right_);
        }
    }

    void run_out(Tensor& result, Route way, const Tensor& x, const Tensor& rounded,
                 const std::optional<Tensor>& bias) const {
        switch (way) {
            case Route::onednn_bf16:
                result.copy_(onednn_linear(rounded, bf16_weight(), {}));
                if (bias) result.add_(*bias);
                break;
            case Route::onednn:
                result.copy_(onednn_linear(x, float32_weight(x.size(0)), bias));
                break;
            default:
                if (bias) {
                    at::addmm_out(result, *bias, x, right_);
                } else {
                    at::mm_out(result, x, right_);
                }
        }
    }

    // right^T, oneDNN's linear weight in float32 for a product of `rows` rows, made at the first product that needs
    // it: when `repeated`, contiguous, and packed for products of packed_float32_from_rows rows or more.
    const Tensor& float32_weight(int64_t rows) const {
        if (repeated_ && rows >= packed_float32_from_rows().load()) {
            if (!packed_float32_weight_.defined()) packed_float32_weight_ = pack_weight(right_.t().contiguous());
            return packed_float32_weight_;
        }
        if (!float32_weight_.defined()) float32_weight_ = repeated_ ? right_.t().contiguous() : right_.t();
        return float32_weight_;
    }

    // right^T in bfloat16, oneDNN's linear weight, made at the first product that runs in bfloat16: rounded in its own
    // layout (rounding into a transposed one ran several times slower), then transposed; when `repeated` or kept
    // across calls, contiguous and packed.
    const Tensor& bf16_weight() const {
        if (!bf16_weight_.defined()) {
            auto packed = [&] { return pack_weight(right_.to(at::kBFloat16).t().contiguous()); };
            if (across_calls_) {
                bf16_weight_ = KeptWeights::instance().get(right_, *key_, packed);
            } else {
                bf16_weight_ = repeated_ ? packed() : right_.to(at::kBFloat16).t();
            }
        }
        return bf16_weight_;
    }

    Route route(const Tensor& x) const {
        if (right_.scalar_type() != at::kFloat || right_.numel() == 0) return Route::aten;
        return product_route(x.scalar_type(), x.size(0), right_.numel(), bf16_, packed_);
    }

    Tensor right_;
    bool repeated_;
    bool bf16_;
    bool across_calls_;
    std::optional<KeptWeights::Key> key_;  // what KeptWeights knows right_ by (across_calls_)
    bool packed_;  // its bfloat16 weight packed: repeated, or kept across calls and met before
    mutable Tensor bf16_weight_;
    mutable Tensor float32_weight_;
    mutable Tensor packed_float32_weight_;
};

// A weight's gradient grad^T @ x ([N, K]) over M rows: grad [M, N] and x [M, K], each row-major. ATen's GEMM reads a
// transposed operand as it is; oneDNN's linear copies its left operand when it comes transposed (the right one it
// reads in any strides), so through oneDNN this takes the product whose copies are smaller: grad^T copied ([N, M])
// and read against x, or x^T copied ([K, M]) against grad and the [K, N] result transposed into place ([N, K]). In an
// LSTM layer's backward (N = 4H) the second copies a quarter to a half of what the first does: measured 2026-12-05
// on a 2-core AMD EPYC with AVX-512, one thread, the [768, 2048] copies of the g2p encoder's gate gradients took
// 15 ms of its training step. With `float32_through_onednn` false float32 stays with ATen's GEMM whatever the library
// (the decoders' gradients, where that was measured faster), as it does on CPUs without AVX-512
// (onednn_weight_gradients). In bfloat16 (bf16_products, where gradient_bf16_pays) it goes through ATen's bfloat16
// GEMM, whichever the library. `rounded` gives grad in bfloat16 (called only then).
template <typename Rounded>
inline Tensor weight_gradient_of(const Tensor& grad, const Tensor& x, bool float32_through_onednn, Rounded rounded) {
    const int64_t rows = grad.size(0), outputs = grad.size(1), inputs = x.size(1);
    const Route route = grad.numel() == 0 || x.numel() == 0
                            ? Route::aten
                            : product_route(x.scalar_type(), rows, outputs * inputs,
                                            bf16_operand(x) && gradient_bf16_pays(rows, outputs * inputs));
    if (route == Route::onednn_bf16) {
        // Through ATen's bfloat16 GEMM (oneDNN's matmul, which reads the transposed operand as it is): rounding an
        // operand into a transposed layout cost more than the product saved (2026-12-06, AMD EPYC Zen 4, one thread,
        // [4096, 768]: 10.7 ms, against 0.5 for a plain rounding); this way grad^T @ x with M = 4096 (N, K = 768,
        // 384 and 1536, 960) took 0.53-0.60x float32's time.
        return at::mm(rounded().t(), x.to(at::kBFloat16)).to(at::kFloat);
    }
    if (route == Route::aten || !float32_through_onednn || !onednn_weight_gradients().load()) {
        return at::mm(grad.t(), x);
    }
    if (outputs * rows <= inputs * rows + outputs * inputs) return onednn_linear(grad.t().contiguous(), x.t(), {});
    return onednn_linear(x.t().contiguous(), grad.t(), {}).t().contiguous();
}

inline Tensor weight_gradient(const Tensor& grad, const Tensor& x, bool float32_through_onednn = true) {
    return weight_gradient_of(grad, x, float32_through_onednn, [&] { return grad.to(at::kBFloat16); });
}

// The same with the gradient's rows rounded once (LeftRows), when other products read them too.
inline Tensor weight_gradient(LeftRows& grad, const Tensor& x, bool float32_through_onednn = true) {
    return weight_gradient_of(grad.values(), x, float32_through_onednn, [&] { return grad.rounded(); });
}

// s2s_fast::cpu_products(str? choose) -> str: the products' library ("onednn" or "aten"), after setting it when given.
inline std::string products_op(const std::optional<std::string>& choose) {
    if (choose) {
        TORCH_CHECK(*choose == "onednn" || *choose == "aten", "cpu_products: choose \"onednn\" or \"aten\", got \"",
                    *choose, "\"");
        TORCH_CHECK(*choose == "aten" || onednn_linear_registered(),
                    "cpu_products: this torch has no oneDNN linear (mkldnn::_linear_pointwise)");
        onednn_products().store(*choose == "onednn");
    }
    return onednn_products().load() ? "onednn" : "aten";
}

// The setting `value` of the op `op` (read, and set first when `given`, which must be >= 0; `argument` names it in
// the error): the ops below that read and set the size thresholds.
inline int64_t non_negative_setting(std::atomic<int64_t>& value, std::optional<int64_t> given, const char* op,
                                    const char* argument) {
    if (given) {
        TORCH_CHECK(*given >= 0, op, ": ", argument, " must be >= 0, got ", *given);
        value.store(*given);
    }
    return value.load();
}

// s2s_fast::cpu_onednn_from_work(int? work) -> int: onednn_from_work, after setting it when given.
inline int64_t onednn_from_work_op(std::optional<int64_t> work) {
    return non_negative_setting(onednn_from_work(), work, "cpu_onednn_from_work", "work");
}

// s2s_fast::cpu_packed_float32_from_rows(int? rows) -> int: packed_float32_from_rows, after setting it when given.
inline int64_t packed_float32_from_rows_op(std::optional<int64_t> rows) {
    return non_negative_setting(packed_float32_from_rows(), rows, "cpu_packed_float32_from_rows", "rows");
}

// s2s_fast::cpu_bf16_from_work(int? work) -> int: bf16_from_work, after setting it when given.
inline int64_t bf16_from_work_op(std::optional<int64_t> work) {
    return non_negative_setting(bf16_from_work(), work, "cpu_bf16_from_work", "work");
}

// s2s_fast::cpu_onednn_weight_gradients(bool? through) -> bool: onednn_weight_gradients, after setting it when given.
inline bool onednn_weight_gradients_op(std::optional<bool> through) {
    if (through) onednn_weight_gradients().store(*through);
    return onednn_weight_gradients().load();
}

// s2s_fast::cpu_bf16_products(str? force) -> bool: whether float32 products through oneDNN run in bfloat16 now, after
// setting bf16_products_forced when given: "torch" follows torch's switch (the default), "always", "never".
inline bool bf16_products_op(const std::optional<std::string>& force) {
    if (force) {
        TORCH_CHECK(*force == "torch" || *force == "always" || *force == "never",
                    "cpu_bf16_products: force \"torch\", \"always\" or \"never\", got \"", *force, "\"");
        TORCH_CHECK(*force != "always" || (cpu_can_run_bf16_products() && onednn_linear_registered()),
                    "cpu_bf16_products: this CPU or torch cannot run bfloat16 products through oneDNN (it needs an x86 "
                    "CPU with AVX-512 BW, VL and DQ, and torch's mkldnn::_linear_pointwise)");
        bf16_products_forced().store(*force == "torch" ? -1 : *force == "always" ? 1 : 0);
    }
    return bf16_products();
}

}  // namespace s2s_fast::cpu
