// Torch binding of the CUDA kernels: operator schemas under the namespace s2s_fast (TORCH_LIBRARY), kernel-device
// implementations that check their inputs, run on the current stream of the inputs' device and check every launch,
// and two operators for the persistent layer's planner and the device limits it plans for. Fake (meta)
// implementations and autograd formulas are registered from Python (s2s_fast/cuda/).
//
// Built twice: with nvcc against the CUDA build of torch (s2s_fast._C, CUDA tensors), and by the host compiler with
// csrc/emulation/include first on the include path (s2s_fast._C_emulated: the same kernels run on CPU tensors
// through csrc/emulation/). The block below is all that differs.
// The emulation's stand-ins when csrc/emulation/include comes first on the include path.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "additive_attention.h"
#include "device_limits.h"
#include "gru_cell.h"
#include "lstm_cell.h"
#include "lstm_layer.h"

#if defined(S2S_FAST_CUDA_EMULATION)
#define S2S_FAST_KERNEL_DISPATCH_KEY CPU
namespace s2s_fast {
namespace {
constexpr c10::DeviceType kKernelDevice = c10::DeviceType::CPU;
constexpr const char* kKernelDeviceTensor =
    "a CPU tensor (S2S_FAST_CUDA_EMULATE runs the CUDA kernels on the CPU, in an emulation)";
// One emulated device, and launches that finish before they return: no device to switch to, no stream.
struct DeviceGuard {
    explicit DeviceGuard(c10::Device) {}
    explicit DeviceGuard(c10::DeviceIndex) {}
};
cudaStream_t current_stream() { return nullptr; }
// Fresh outputs start as NaN (every bit set), so that an element a kernel forgets to write shows in the tests.
at::Tensor kernel_output(at::IntArrayRef shape, at::TensorOptions options) {
    return at::empty(shape, options).fill_(std::numeric_limits<float>::quiet_NaN());
}
}  // namespace
}  // namespace s2s_fast
#else
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define S2S_FAST_KERNEL_DISPATCH_KEY CUDA
namespace s2s_fast {
namespace {
constexpr c10::DeviceType kKernelDevice = c10::DeviceType::CUDA;
constexpr const char* kKernelDeviceTensor = "a CUDA tensor";
using DeviceGuard = c10::cuda::CUDAGuard;
cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
at::Tensor kernel_output(at::IntArrayRef shape, at::TensorOptions options) { return at::empty(shape, options); }
}  // namespace
}  // namespace s2s_fast
#endif

namespace s2s_fast {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

template <typename T>
struct TypeTag {
    using type = T;
};

// Calls fn(TypeTag<T>{}) with the kernel element type of a torch dtype.
template <typename Fn>
void dispatch_dtype(at::ScalarType dtype, const char* op, Fn&& fn) {
    switch (dtype) {
        case at::kFloat: fn(TypeTag<float>{}); break;
        case at::kHalf: fn(TypeTag<__half>{}); break;
        case at::kBFloat16: fn(TypeTag<__nv_bfloat16>{}); break;
        default:
            TORCH_CHECK(false, "s2s_fast::", op, ": the cuda backend serves float32, float16 and bfloat16, got ", dtype,
                        "; use backend='reference' for other dtypes");
    }
}

void check_launch(cudaError_t status, const char* op) {
    TORCH_CHECK(status == cudaSuccess, "s2s_fast::", op, ": CUDA kernel launch failed: ", cudaGetErrorString(status));
}

// Every tensor on one CUDA device with one floating dtype (None skipped).
void check_inputs(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> tensors) {
    const Tensor* first = nullptr;
    const char* first_name = nullptr;
    for (const auto& [name, tensor] : tensors) {
        if (tensor == nullptr) continue;
        TORCH_CHECK(tensor->device().type() == kKernelDevice, "s2s_fast::", op, ": ", name, " must be ",
                    kKernelDeviceTensor, ", got one on ", tensor->device(), "; use backend='reference' for it");
        if (first == nullptr) {
            first = tensor;
            first_name = name;
            continue;
        }
        TORCH_CHECK(tensor->device() == first->device(), "s2s_fast::", op, ": ", name, " is on ", tensor->device(),
                    " but ", first_name, " is on ", first->device());
        TORCH_CHECK(tensor->scalar_type() == first->scalar_type(), "s2s_fast::", op, ": ", name, " has dtype ",
                    tensor->scalar_type(), " but ", first_name, " has ", first->scalar_type());
    }
}

void check_shape(const char* op, const char* name, const Tensor& tensor, at::IntArrayRef expected) {
    TORCH_CHECK(tensor.sizes() == expected, "s2s_fast::", op, ": ", name, " must have shape ", expected, ", got ",
                tensor.sizes());
}

const Tensor* optional_ptr(const OptionalTensor& tensor) { return tensor.has_value() ? &*tensor : nullptr; }

// The tensor itself when its rows are contiguous (last stride 1), else a contiguous copy.
Tensor rows_contiguous(const Tensor& tensor) { return tensor.stride(-1) == 1 ? tensor : tensor.contiguous(); }

// A float32 tensor a forward saved for its backward: contiguous, on the kernels' device.
void check_saved(const char* op, const char* name, const Tensor& saved) {
    TORCH_CHECK(saved.device().type() == kKernelDevice && saved.scalar_type() == at::kFloat && saved.is_contiguous(),
                "s2s_fast::", op, ": ", name, " must be the contiguous float32 tensor saved by the forward, on the ",
                "kernels' device");
}

const void* data_or_null(const OptionalTensor& tensor) { return tensor.has_value() ? tensor->data_ptr() : nullptr; }

OptionalTensor contiguous_or_none(const OptionalTensor& tensor) {
    if (!tensor.has_value()) return std::nullopt;
    return tensor->contiguous();
}

at::TensorOptions float_options(const Tensor& like) { return like.options().dtype(at::kFloat); }

// Devices, dtypes and shapes of a cell's operands; `input` is [B, I] for a cell and [T, B, I] for a layer.
void check_cell(const char* op, int64_t gates, const Tensor& input, const Tensor& hx, const Tensor& weight_ih,
                const Tensor& weight_hh, const OptionalTensor& bias_ih, const OptionalTensor& bias_hh) {
    check_inputs(op, {{"input", &input},
                      {"hx", &hx},
                      {"weight_ih", &weight_ih},
                      {"weight_hh", &weight_hh},
                      {"bias_ih", optional_ptr(bias_ih)},
                      {"bias_hh", optional_ptr(bias_hh)}});
    TORCH_CHECK(input.dim() >= 2 && hx.dim() == 2 && weight_hh.dim() == 2, "s2s_fast::", op,
                ": input, hx and weight_hh must be [B, I] (or [T, B, I]), [B, H] and [", gates, "H, H]");
    const int64_t batch = input.size(-2), hidden = weight_hh.size(1);
    check_shape(op, "weight_hh", weight_hh, {gates * hidden, hidden});
    check_shape(op, "weight_ih", weight_ih, {gates * hidden, input.size(-1)});
    check_shape(op, "hx", hx, {batch, hidden});
    if (bias_ih.has_value()) check_shape(op, "bias_ih", *bias_ih, {gates * hidden});
    if (bias_hh.has_value()) check_shape(op, "bias_hh", *bias_hh, {gates * hidden});
}

// Activated gates saved for the backward when asked to; an empty tensor otherwise.
Tensor activations_buffer(const Tensor& like, at::IntArrayRef shape, bool save) {
    return save ? kernel_output(shape, float_options(like)) : kernel_output({0}, float_options(like));
}

std::tuple<Tensor, Tensor, Tensor> lstm_cell_fwd_cuda(const Tensor& input, const Tensor& hx, const Tensor& cx,
                                                      const Tensor& weight_ih, const Tensor& weight_hh,
                                                      const OptionalTensor& bias_ih, const OptionalTensor& bias_hh,
                                                      bool save_activations) {
    const char* op = "cuda_lstm_cell_fwd";
    TORCH_CHECK(input.dim() == 2, "s2s_fast::", op, ": input must be [B, I], got ", input.sizes());
    check_cell(op, 4, input, hx, weight_ih, weight_hh, bias_ih, bias_hh);
    check_inputs(op, {{"input", &input}, {"cx", &cx}});
    check_shape(op, "cx", cx, hx.sizes());
    const DeviceGuard guard(input.device());
    const int64_t batch = input.size(0), hidden = hx.size(1);
    // Recurrent and input GEMMs through cuBLAS into one gates buffer; the kernel adds the biases.
    Tensor gates = at::mm(input, weight_ih.t());
    gates.addmm_(hx, weight_hh.t());
    const Tensor cx_rows = rows_contiguous(cx);
    const OptionalTensor b_ih = contiguous_or_none(bias_ih), b_hh = contiguous_or_none(bias_hh);
    Tensor hy = kernel_output({batch, hidden}, hx.options());
    Tensor cy = kernel_output({batch, hidden}, hx.options());
    Tensor activations = activations_buffer(input, {batch, 4 * hidden}, save_activations);
    LstmCellPointwiseParams params{};
    params.batch = batch;
    params.hidden = hidden;
    params.gates = gates.data_ptr();
    params.gates_row_stride = gates.stride(0);
    params.bias_ih = data_or_null(b_ih);
    params.bias_hh = data_or_null(b_hh);
    params.cx = cx_rows.data_ptr();
    params.cx_row_stride = cx_rows.stride(0);
    params.hy = hy.data_ptr();
    params.cy = cy.data_ptr();
    params.activations = save_activations ? activations.data_ptr<float>() : nullptr;
    dispatch_dtype(input.scalar_type(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(lstm_cell_pointwise_fwd<T>(params, current_stream()), op);
    });
    return {hy, cy, activations};
}

std::tuple<Tensor, Tensor, Tensor> lstm_cell_fused_fwd_cuda(const Tensor& input, const Tensor& hx, const Tensor& cx,
                                                            const Tensor& weight_ih, const Tensor& weight_hh,
                                                            const OptionalTensor& bias_ih,
                                                            const OptionalTensor& bias_hh, bool save_activations) {
    const char* op = "cuda_lstm_cell_fused_fwd";
    TORCH_CHECK(input.dim() == 2, "s2s_fast::", op, ": input must be [B, I], got ", input.sizes());
    check_cell(op, 4, input, hx, weight_ih, weight_hh, bias_ih, bias_hh);
    check_inputs(op, {{"input", &input}, {"cx", &cx}});
    check_shape(op, "cx", cx, hx.sizes());
    const int64_t batch = input.size(0), hidden = hx.size(1);
    TORCH_CHECK(batch <= kLstmCellFusedMaxBatch, "s2s_fast::", op, ": serves batches of at most ",
                kLstmCellFusedMaxBatch, " rows, got ", batch, "; use s2s_fast::cuda_lstm_cell_fwd");
    const DeviceGuard guard(input.device());
    const Tensor input_rows = rows_contiguous(input), hx_rows = rows_contiguous(hx), cx_rows = rows_contiguous(cx);
    const Tensor weight_ih_rows = rows_contiguous(weight_ih), weight_hh_rows = rows_contiguous(weight_hh);
    const OptionalTensor b_ih = contiguous_or_none(bias_ih), b_hh = contiguous_or_none(bias_hh);
    Tensor hy = kernel_output({batch, hidden}, hx.options());
    Tensor cy = kernel_output({batch, hidden}, hx.options());
    Tensor activations = activations_buffer(input, {batch, 4 * hidden}, save_activations);
    LstmCellFusedParams params{};
    params.batch = batch;
    params.input_size = input.size(1);
    params.hidden = hidden;
    params.input = input_rows.data_ptr();
    params.input_row_stride = input_rows.stride(0);
    params.hx = hx_rows.data_ptr();
    params.hx_row_stride = hx_rows.stride(0);
    params.cx = cx_rows.data_ptr();
    params.cx_row_stride = cx_rows.stride(0);
    params.weight_ih = weight_ih_rows.data_ptr();
    params.weight_ih_row_stride = weight_ih_rows.stride(0);
    params.weight_hh = weight_hh_rows.data_ptr();
    params.weight_hh_row_stride = weight_hh_rows.stride(0);
    params.bias_ih = data_or_null(b_ih);
    params.bias_hh = data_or_null(b_hh);
    params.hy = hy.data_ptr();
    params.cy = cy.data_ptr();
    params.activations = save_activations ? activations.data_ptr<float>() : nullptr;
    dispatch_dtype(input.scalar_type(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(lstm_cell_fused_fwd<T>(params, current_stream()), op);
    });
    return {hy, cy, activations};
}

std::tuple<Tensor, Tensor> lstm_cell_bwd_cuda(const Tensor& grad_hy, const Tensor& grad_cy, const Tensor& cx,
                                              const Tensor& activations) {
    const char* op = "cuda_lstm_cell_bwd";
    check_inputs(op, {{"grad_hy", &grad_hy}, {"grad_cy", &grad_cy}, {"cx", &cx}});
    TORCH_CHECK(cx.dim() == 2, "s2s_fast::", op, ": cx must be 2-d");
    const int64_t batch = cx.size(0), hidden = cx.size(1);
    check_shape(op, "grad_hy", grad_hy, cx.sizes());
    check_shape(op, "grad_cy", grad_cy, cx.sizes());
    check_saved(op, "activations", activations);
    check_shape(op, "activations", activations, {batch, 4 * hidden});
    const DeviceGuard guard(cx.device());
    const Tensor grad_hy_rows = rows_contiguous(grad_hy), grad_cy_rows = rows_contiguous(grad_cy);
    const Tensor cx_rows = rows_contiguous(cx);
    Tensor grad_gates = kernel_output({batch, 4 * hidden}, cx.options());
    Tensor grad_cx = kernel_output({batch, hidden}, cx.options());
    LstmCellBackwardParams params{};
    params.batch = batch;
    params.hidden = hidden;
    params.grad_hy = grad_hy_rows.data_ptr();
    params.grad_hy_row_stride = grad_hy_rows.stride(0);
    params.grad_cy = grad_cy_rows.data_ptr();
    params.grad_cy_row_stride = grad_cy_rows.stride(0);
    params.cx = cx_rows.data_ptr();
    params.cx_row_stride = cx_rows.stride(0);
    params.activations = activations.data_ptr<float>();
    params.grad_gates = grad_gates.data_ptr();
    params.grad_cx = grad_cx.data_ptr();
    dispatch_dtype(cx.scalar_type(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(lstm_cell_bwd<T>(params, current_stream()), op);
    });
    return {grad_gates, grad_cx};
}

std::tuple<Tensor, Tensor> gru_cell_fwd_cuda(const Tensor& input, const Tensor& hx, const Tensor& weight_ih,
                                             const Tensor& weight_hh, const OptionalTensor& bias_ih,
                                             const OptionalTensor& bias_hh, bool save_activations) {
    const char* op = "cuda_gru_cell_fwd";
    TORCH_CHECK(input.dim() == 2, "s2s_fast::", op, ": input must be [B, I], got ", input.sizes());
    check_cell(op, 3, input, hx, weight_ih, weight_hh, bias_ih, bias_hh);
    const DeviceGuard guard(input.device());
    const int64_t batch = input.size(0), hidden = hx.size(1);
    const Tensor input_gates = at::mm(input, weight_ih.t());
    const Tensor hidden_gates = at::mm(hx, weight_hh.t());
    const Tensor hx_rows = rows_contiguous(hx);
    const OptionalTensor b_ih = contiguous_or_none(bias_ih), b_hh = contiguous_or_none(bias_hh);
    Tensor hy = kernel_output({batch, hidden}, hx.options());
    Tensor activations = activations_buffer(input, {batch, 4 * hidden}, save_activations);
    GruCellForwardParams params{};
    params.batch = batch;
    params.hidden = hidden;
    params.input_gates = input_gates.data_ptr();
    params.input_gates_row_stride = input_gates.stride(0);
    params.hidden_gates = hidden_gates.data_ptr();
    params.hidden_gates_row_stride = hidden_gates.stride(0);
    params.bias_ih = data_or_null(b_ih);
    params.bias_hh = data_or_null(b_hh);
    params.hx = hx_rows.data_ptr();
    params.hx_row_stride = hx_rows.stride(0);
    params.hy = hy.data_ptr();
    params.activations = save_activations ? activations.data_ptr<float>() : nullptr;
    dispatch_dtype(input.scalar_type(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(gru_cell_fwd<T>(params, current_stream()), op);
    });
    return {hy, activations};
}

std::tuple<Tensor, Tensor, Tensor> gru_cell_bwd_cuda(const Tensor& grad_hy, const Tensor& hx,
                                                     const Tensor& activations) {
    const char* op = "cuda_gru_cell_bwd";
    check_inputs(op, {{"grad_hy", &grad_hy}, {"hx", &hx}});
    TORCH_CHECK(hx.dim() == 2, "s2s_fast::", op, ": hx must be 2-d");
    const int64_t batch = hx.size(0), hidden = hx.size(1);
    check_shape(op, "grad_hy", grad_hy, hx.sizes());
    check_saved(op, "activations", activations);
    check_shape(op, "activations", activations, {batch, 4 * hidden});
    const DeviceGuard guard(hx.device());
    const Tensor grad_hy_rows = rows_contiguous(grad_hy), hx_rows = rows_contiguous(hx);
    Tensor grad_input_gates = kernel_output({batch, 3 * hidden}, hx.options());
    Tensor grad_hidden_gates = kernel_output({batch, 3 * hidden}, hx.options());
    Tensor grad_hx_direct = kernel_output({batch, hidden}, hx.options());
    GruCellBackwardParams params{};
    params.batch = batch;
    params.hidden = hidden;
    params.grad_hy = grad_hy_rows.data_ptr();
    params.grad_hy_row_stride = grad_hy_rows.stride(0);
    params.hx = hx_rows.data_ptr();
    params.hx_row_stride = hx_rows.stride(0);
    params.activations = activations.data_ptr<float>();
    params.grad_input_gates = grad_input_gates.data_ptr();
    params.grad_hidden_gates = grad_hidden_gates.data_ptr();
    params.grad_hx_direct = grad_hx_direct.data_ptr();
    dispatch_dtype(hx.scalar_type(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(gru_cell_bwd<T>(params, current_stream()), op);
    });
    return {grad_input_gates, grad_hidden_gates, grad_hx_direct};
}

void check_attention(const char* op, const Tensor& query_proj, const Tensor& key_proj, const Tensor& v,
                     const Tensor& values, const OptionalTensor& mask) {
    check_inputs(op, {{"query_proj", &query_proj}, {"key_proj", &key_proj}, {"v", &v}, {"values", &values}});
    TORCH_CHECK(query_proj.dim() == 3 && key_proj.dim() == 3 && values.dim() == 3, "s2s_fast::", op,
                ": query_proj [B, Tq, A], key_proj [B, Tk, A] and values [B, Tk, Dv] must be 3-d");
    const int64_t batch = key_proj.size(0), keys = key_proj.size(1), attn = key_proj.size(2);
    check_shape(op, "query_proj", query_proj, {batch, query_proj.size(1), attn});
    check_shape(op, "v", v, {attn});
    check_shape(op, "values", values, {batch, keys, values.size(2)});
    TORCH_CHECK(attn <= kAttentionMaxWidth && values.size(2) <= kAttentionMaxWidth, "s2s_fast::", op,
                ": the attention width A and the value size Dv must be at most ", kAttentionMaxWidth,
                ", got A = ", attn, " and Dv = ", values.size(2));
    TORCH_CHECK(batch <= kAttentionMaxBatch, "s2s_fast::", op, ": serves batches of at most ", kAttentionMaxBatch,
                " rows, got ", batch);
    if (mask.has_value()) {
        TORCH_CHECK(mask->scalar_type() == at::kBool && mask->device() == key_proj.device(), "s2s_fast::", op,
                    ": mask must be a bool tensor on ", key_proj.device());
        check_shape(op, "mask", *mask, {batch, keys});
    }
}

std::tuple<Tensor, Tensor, Tensor> additive_attention_fwd_cuda(const Tensor& query_proj, const Tensor& key_proj,
                                                               const Tensor& v, const Tensor& values,
                                                               const OptionalTensor& mask, bool packed_tanh) {
    const char* op = "cuda_additive_attention_fwd";
    check_attention(op, query_proj, key_proj, v, values, mask);
    const DeviceGuard guard(query_proj.device());
    const int64_t batch = key_proj.size(0), queries = query_proj.size(1), keys = key_proj.size(1);
    const int64_t value_size = values.size(2);
    const Tensor query_c = query_proj.contiguous(), key_c = key_proj.contiguous(), v_c = v.contiguous();
    const Tensor values_c = values.contiguous();
    const OptionalTensor mask_c = contiguous_or_none(mask);
    Tensor context = kernel_output({batch, queries, value_size}, values.options());
    Tensor weights = kernel_output({batch, queries, keys}, values.options());
    Tensor probs = kernel_output({batch, queries, keys}, float_options(values));
    AdditiveAttentionForwardParams params{};
    params.batch = batch;
    params.queries = queries;
    params.keys = keys;
    params.attn = key_proj.size(2);
    params.value_size = value_size;
    params.query_proj = query_c.data_ptr();
    params.key_proj = key_c.data_ptr();
    params.v = v_c.data_ptr();
    params.values = values_c.data_ptr();
    params.mask = mask_c.has_value() ? mask_c->data_ptr<bool>() : nullptr;
    params.context = context.data_ptr();
    params.weights = weights.data_ptr();
    params.probs = probs.data_ptr<float>();
    params.packed_tanh = packed_tanh;
    dispatch_dtype(values.scalar_type(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(additive_attention_fwd<T>(params, current_stream()), op);
    });
    return {context, weights, probs};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> additive_attention_bwd_cuda(
    const Tensor& grad_context, const Tensor& grad_weights, const Tensor& query_proj, const Tensor& key_proj,
    const Tensor& v, const Tensor& values, const OptionalTensor& mask, const Tensor& probs, bool packed_tanh) {
    const char* op = "cuda_additive_attention_bwd";
    check_attention(op, query_proj, key_proj, v, values, mask);
    check_inputs(op, {{"values", &values}, {"grad_context", &grad_context}, {"grad_weights", &grad_weights}});
    const int64_t batch = key_proj.size(0), queries = query_proj.size(1), keys = key_proj.size(1);
    const int64_t attn = key_proj.size(2), value_size = values.size(2);
    check_shape(op, "grad_context", grad_context, {batch, queries, value_size});
    check_shape(op, "grad_weights", grad_weights, {batch, queries, keys});
    check_saved(op, "probs", probs);
    check_shape(op, "probs", probs, {batch, queries, keys});
    const DeviceGuard guard(query_proj.device());
    if (batch == 0 || queries == 0 || keys == 0) {
        return {at::zeros_like(query_proj, at::MemoryFormat::Contiguous),
                at::zeros_like(key_proj, at::MemoryFormat::Contiguous), at::zeros_like(v, at::MemoryFormat::Contiguous),
                at::zeros_like(values, at::MemoryFormat::Contiguous)};
    }
    const Tensor query_c = query_proj.contiguous(), key_c = key_proj.contiguous(), v_c = v.contiguous();
    const Tensor values_c = values.contiguous(), probs_c = probs.contiguous();
    const Tensor grad_context_c = grad_context.contiguous(), grad_weights_c = grad_weights.contiguous();
    const OptionalTensor mask_c = contiguous_or_none(mask);
    // Tiles of keys add their parts of grad_query atomically, in an order that varies from run to run; under
    // torch.use_deterministic_algorithms(True) each tile writes a slab of its own, added in a fixed order.
    const bool deterministic = at::globalContext().deterministicAlgorithms();
    Tensor workspace = kernel_output(
        {additive_attention_bwd_workspace(batch, queries, keys, attn, deterministic)}, float_options(values));
    Tensor grad_query = kernel_output({batch, queries, attn}, values.options());
    Tensor grad_key = kernel_output({batch, keys, attn}, values.options());
    Tensor grad_v = kernel_output({attn}, values.options());
    Tensor grad_values = kernel_output({batch, keys, value_size}, values.options());
    AdditiveAttentionBackwardParams params{};
    params.batch = batch;
    params.queries = queries;
    params.keys = keys;
    params.attn = attn;
    params.value_size = value_size;
    params.query_proj = query_c.data_ptr();
    params.key_proj = key_c.data_ptr();
    params.v = v_c.data_ptr();
    params.values = values_c.data_ptr();
    params.mask = mask_c.has_value() ? mask_c->data_ptr<bool>() : nullptr;
    params.probs = probs_c.data_ptr<float>();
    params.grad_context = grad_context_c.data_ptr();
    params.grad_weights = grad_weights_c.data_ptr();
    params.grad_query = grad_query.data_ptr();
    params.grad_key = grad_key.data_ptr();
    params.grad_v = grad_v.data_ptr();
    params.grad_values = grad_values.data_ptr();
    params.packed_tanh = packed_tanh;
    additive_attention_bwd_layout(params, workspace.data_ptr<float>(), deterministic);
    // Two launches and no other work: the kernels write every gradient in the inputs' dtype.
    dispatch_dtype(values.scalar_type(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(additive_attention_bwd_scores<T>(params, current_stream()), op);
        check_launch(additive_attention_bwd_inputs<T>(params, current_stream()), op);
    });
    return {grad_query, grad_key, grad_v, grad_values};
}

const char* dtype_name(at::ScalarType dtype) {
    switch (dtype) {
        case at::kFloat: return "float32";
        case at::kHalf: return "float16";
        case at::kBFloat16: return "bfloat16";
        default: return "other";
    }
}

LstmLayerPlan layer_plan(at::ScalarType dtype, int64_t batch, int64_t hidden, bool backward) {
    LstmLayerPlan plan;
    dispatch_dtype(dtype, "lstm_layer_plan", [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(lstm_layer_plan<T>(batch, hidden, backward, &plan), "lstm_layer_plan");
    });
    return plan;
}

void check_layer_served(const char* op, at::ScalarType dtype, int64_t batch, int64_t hidden, bool backward) {
    const LstmLayerPlan plan = layer_plan(dtype, batch, hidden, backward);
    TORCH_CHECK(plan.blocks > 0, "s2s_fast::", op, ": the persistent LSTM kernel does not serve batch ", batch,
                " x hidden ", hidden, " in ", dtype_name(dtype), (backward ? " with a backward" : ""),
                " on this GPU (J = ceil(H / multiprocessors) units x B must be at most 1024, and a block's rows of W_hh plus "
                "the chunk buffers must fit its shared memory); "
                "s2s_fast.cuda.LIMITS['lstm_layer'] says so before the call, and backend='auto' then falls back");
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_fwd_cuda(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& weight_ih, const Tensor& weight_hh,
    const OptionalTensor& bias_ih, const OptionalTensor& bias_hh, const OptionalTensor& lengths, bool reverse,
    bool save_for_backward) {
    const char* op = "cuda_lstm_layer_fwd";
    TORCH_CHECK(input.dim() == 3, "s2s_fast::", op, ": input must be [T, B, I], got ", input.sizes());
    const int64_t steps = input.size(0), batch = input.size(1), hidden = hx.size(-1);
    check_cell(op, 4, input, hx, weight_ih, weight_hh, bias_ih, bias_hh);
    check_inputs(op, {{"input", &input}, {"cx", &cx}});
    check_shape(op, "cx", cx, hx.sizes());
    if (lengths.has_value()) {
        TORCH_CHECK(lengths->scalar_type() == at::kLong && lengths->device() == input.device(), "s2s_fast::", op,
                    ": lengths must be an int64 tensor on ", input.device());
        check_shape(op, "lengths", *lengths, {batch});
    }
    const DeviceGuard guard(input.device());
    const auto options = hx.options();
    const auto saved = [&](at::IntArrayRef shape, at::TensorOptions opts) {
        return save_for_backward ? kernel_output(shape, opts) : kernel_output({0}, opts);
    };
    Tensor activations = saved({steps, batch, 4 * hidden}, float_options(hx));
    Tensor cell_states = saved({steps, batch, hidden}, float_options(hx));
    Tensor hidden_prev = saved({steps, batch, hidden}, options);
    Tensor output = kernel_output({steps, batch, hidden}, options);
    Tensor hy = kernel_output({batch, hidden}, options);
    Tensor cy = kernel_output({batch, hidden}, options);
    if (steps == 0 || batch == 0) {
        hy.copy_(hx);
        cy.copy_(cx);
        return {output, hy, cy, activations, cell_states, hidden_prev};
    }
    check_layer_served(op, input.scalar_type(), batch, hidden, false);
    const Tensor input_gates = at::matmul(input, weight_ih.t()).contiguous();
    const Tensor weight_hh_c = weight_hh.contiguous(), hx_c = hx.contiguous(), cx_c = cx.contiguous();
    const OptionalTensor b_ih = contiguous_or_none(bias_ih), b_hh = contiguous_or_none(bias_hh);
    const OptionalTensor lengths_c = contiguous_or_none(lengths);
    Tensor state_buffer = at::zeros({2, batch, lstm_layer_padded(hidden, int(input.element_size()))}, options);
    LstmLayerForwardParams params{};
    params.steps = steps;
    params.batch = batch;
    params.hidden = hidden;
    params.reverse = reverse;
    params.input_gates = input_gates.data_ptr();
    params.weight_hh = weight_hh_c.data_ptr();
    params.bias_ih = data_or_null(b_ih);
    params.bias_hh = data_or_null(b_hh);
    params.lengths = lengths_c.has_value() ? lengths_c->data_ptr<int64_t>() : nullptr;
    params.hx = hx_c.data_ptr();
    params.cx = cx_c.data_ptr();
    params.output = output.data_ptr();
    params.hy = hy.data_ptr();
    params.cy = cy.data_ptr();
    params.state_buffer = state_buffer.data_ptr();
    params.activations = save_for_backward ? activations.data_ptr<float>() : nullptr;
    params.cell_states = save_for_backward ? cell_states.data_ptr<float>() : nullptr;
    params.hidden_prev = save_for_backward ? hidden_prev.data_ptr() : nullptr;
    dispatch_dtype(input.scalar_type(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(lstm_layer_fwd<T>(params, current_stream()), op);
    });
    return {output, hy, cy, activations, cell_states, hidden_prev};
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_bwd_cuda(const Tensor& grad_output, const Tensor& grad_hy,
                                                       const Tensor& grad_cy, const Tensor& weight_hh,
                                                       const OptionalTensor& lengths, const Tensor& cx,
                                                       const Tensor& activations, const Tensor& cell_states,
                                                       bool reverse) {
    const char* op = "cuda_lstm_layer_bwd";
    check_inputs(op, {{"grad_output", &grad_output},
                      {"grad_hy", &grad_hy},
                      {"grad_cy", &grad_cy},
                      {"weight_hh", &weight_hh},
                      {"cx", &cx}});
    TORCH_CHECK(grad_output.dim() == 3, "s2s_fast::", op, ": grad_output must be [T, B, H]");
    const int64_t steps = grad_output.size(0), batch = grad_output.size(1), hidden = grad_output.size(2);
    check_shape(op, "weight_hh", weight_hh, {4 * hidden, hidden});
    check_shape(op, "grad_hy", grad_hy, {batch, hidden});
    check_shape(op, "grad_cy", grad_cy, {batch, hidden});
    check_shape(op, "cx", cx, {batch, hidden});
    check_saved(op, "activations", activations);
    check_saved(op, "cell_states", cell_states);
    check_shape(op, "activations", activations, {steps, batch, 4 * hidden});
    check_shape(op, "cell_states", cell_states, {steps, batch, hidden});
    if (lengths.has_value()) {
        TORCH_CHECK(lengths->scalar_type() == at::kLong && lengths->device() == grad_output.device(), "s2s_fast::", op,
                    ": lengths must be an int64 tensor on ", grad_output.device());
        check_shape(op, "lengths", *lengths, {batch});
    }
    const DeviceGuard guard(grad_output.device());
    const auto options = grad_output.options();
    Tensor grad_hx = kernel_output({batch, hidden}, options);
    Tensor grad_cx = kernel_output({batch, hidden}, options);
    if (steps == 0 || batch == 0) {
        grad_hx.copy_(grad_hy);
        grad_cx.copy_(grad_cy);
        return {at::zeros({steps, batch, 4 * hidden}, options), grad_hx, grad_cx};
    }
    check_layer_served(op, grad_output.scalar_type(), batch, hidden, true);
    const int64_t gate_length = lstm_layer_padded(4 * hidden, int(grad_output.element_size()));
    Tensor grad_gates = at::zeros({steps, batch, gate_length}, options);
    const Tensor grad_output_c = grad_output.contiguous(), grad_hy_c = grad_hy.contiguous();
    const Tensor grad_cy_c = grad_cy.contiguous(), weight_hh_c = weight_hh.contiguous(), cx_c = cx.contiguous();
    const OptionalTensor lengths_c = contiguous_or_none(lengths);
    LstmLayerBackwardParams params{};
    params.steps = steps;
    params.batch = batch;
    params.hidden = hidden;
    params.reverse = reverse;
    params.weight_hh = weight_hh_c.data_ptr();
    params.lengths = lengths_c.has_value() ? lengths_c->data_ptr<int64_t>() : nullptr;
    params.cx = cx_c.data_ptr();
    params.activations = activations.data_ptr<float>();
    params.cell_states = cell_states.data_ptr<float>();
    params.grad_output = grad_output_c.data_ptr();
    params.grad_hy = grad_hy_c.data_ptr();
    params.grad_cy = grad_cy_c.data_ptr();
    params.grad_gates = grad_gates.data_ptr();
    params.grad_hx = grad_hx.data_ptr();
    params.grad_cx = grad_cx.data_ptr();
    dispatch_dtype(grad_output.scalar_type(), op, [&](auto tag) {
        using T = typename decltype(tag)::type;
        check_launch(lstm_layer_bwd<T>(params, current_stream()), op);
    });
    if (gate_length != 4 * hidden) grad_gates = grad_gates.narrow(2, 0, 4 * hidden).contiguous();
    return {grad_gates, grad_hx, grad_cx};
}

// [units_per_block, blocks, shared_bytes, chunk] of the persistent LSTM kernel for this size on the kernels' device;
// blocks is 0 where the size is not served.
std::vector<int64_t> lstm_layer_plan_op(at::ScalarType dtype, int64_t batch, int64_t hidden, bool backward,
                                        int64_t device_index) {
    const DeviceGuard guard(static_cast<c10::DeviceIndex>(device_index));
    const LstmLayerPlan plan = layer_plan(dtype, batch, hidden, backward);
    return {plan.units_per_block, plan.blocks, plan.shared_bytes, plan.chunk};
}

// The kernels' fixed size limits, for s2s_fast/cuda's limit checks: [attention max width (A, Dv), attention max
// batch, batch of the fused LSTM cell, (unit, row) pairs of one persistent-layer block].
std::vector<int64_t> kernel_limits_op() {
    return {kAttentionMaxWidth, kAttentionMaxBatch, kLstmCellFusedMaxBatch, kLstmLayerMaxPairs};
}

// [multiprocessors, opt-in shared memory per block in bytes] of the kernels' device (the emulated GPU under the
// emulation), the two numbers the persistent layer's plan depends on.
std::vector<int64_t> device_limits_op(int64_t device_index) {
    const DeviceGuard guard(static_cast<c10::DeviceIndex>(device_index));
    DeviceLimits limits;
    check_launch(current_device_limits(&limits), "cuda_device_limits");
    return {limits.multiprocessors, limits.max_shared_per_block};
}

}  // namespace
}  // namespace s2s_fast

TORCH_LIBRARY(s2s_fast, m) {
    m.def(
        "cuda_lstm_cell_fwd(Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
        "Tensor? bias_hh, bool save_activations) -> (Tensor hy, Tensor cy, Tensor activations)");
    m.def(
        "cuda_lstm_cell_fused_fwd(Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, "
        "Tensor? bias_ih, Tensor? bias_hh, bool save_activations) -> (Tensor hy, Tensor cy, Tensor activations)");
    m.def(
        "cuda_lstm_cell_bwd(Tensor grad_hy, Tensor grad_cy, Tensor cx, Tensor activations) "
        "-> (Tensor grad_gates, Tensor grad_cx)");
    m.def(
        "cuda_gru_cell_fwd(Tensor input, Tensor hx, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
        "Tensor? bias_hh, bool save_activations) -> (Tensor hy, Tensor activations)");
    m.def(
        "cuda_gru_cell_bwd(Tensor grad_hy, Tensor hx, Tensor activations) "
        "-> (Tensor grad_input_gates, Tensor grad_hidden_gates, Tensor grad_hx_direct)");
    m.def(
        "cuda_additive_attention_fwd(Tensor query_proj, Tensor key_proj, Tensor v, Tensor values, Tensor? mask, "
        "bool packed_tanh=True) "
        "-> (Tensor context, Tensor weights, Tensor probs)");
    m.def(
        "cuda_additive_attention_bwd(Tensor grad_context, Tensor grad_weights, Tensor query_proj, Tensor key_proj, "
        "Tensor v, Tensor values, Tensor? mask, Tensor probs, bool packed_tanh=True) "
        "-> (Tensor grad_query, Tensor grad_key, Tensor grad_v, Tensor grad_values)");
    m.def(
        "cuda_lstm_layer_fwd(Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
        "Tensor? bias_hh, Tensor? lengths, bool reverse, bool save_for_backward) "
        "-> (Tensor output, Tensor hy, Tensor cy, Tensor activations, Tensor cell_states, Tensor hidden_prev)");
    m.def(
        "cuda_lstm_layer_bwd(Tensor grad_output, Tensor grad_hy, Tensor grad_cy, Tensor weight_hh, Tensor? lengths, "
        "Tensor cx, Tensor activations, Tensor cell_states, bool reverse) "
        "-> (Tensor grad_gates, Tensor grad_hx, Tensor grad_cx)");
    m.def(
        "cuda_lstm_layer_plan(ScalarType dtype, int batch, int hidden, bool backward, int device_index) -> int[]",
        &s2s_fast::lstm_layer_plan_op);
    m.def("cuda_device_limits(int device_index) -> int[]", &s2s_fast::device_limits_op);
    m.def("cuda_kernel_limits() -> int[]", &s2s_fast::kernel_limits_op);
}

TORCH_LIBRARY_IMPL(s2s_fast, S2S_FAST_KERNEL_DISPATCH_KEY, m) {
    m.impl("cuda_lstm_cell_fwd", &s2s_fast::lstm_cell_fwd_cuda);
    m.impl("cuda_lstm_cell_fused_fwd", &s2s_fast::lstm_cell_fused_fwd_cuda);
    m.impl("cuda_lstm_cell_bwd", &s2s_fast::lstm_cell_bwd_cuda);
    m.impl("cuda_gru_cell_fwd", &s2s_fast::gru_cell_fwd_cuda);
    m.impl("cuda_gru_cell_bwd", &s2s_fast::gru_cell_bwd_cuda);
    m.impl("cuda_additive_attention_fwd", &s2s_fast::additive_attention_fwd_cuda);
    m.impl("cuda_additive_attention_bwd", &s2s_fast::additive_attention_bwd_cuda);
    m.impl("cuda_lstm_layer_fwd", &s2s_fast::lstm_layer_fwd_cuda);
    m.impl("cuda_lstm_layer_bwd", &s2s_fast::lstm_layer_bwd_cuda);
}
