#include "model/weights.h"

#include "gguf/gguf.h"
#include "model/catalogue.h"
#include "ops/ops.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata {

const char* role_name(TensorRole role) {
  switch (role) {
    case TensorRole::embedding: return "embedding";
    case TensorRole::output: return "output";
    case TensorRole::norm: return "norm";
    case TensorRole::attention: return "attention";
    case TensorRole::router: return "router";
    case TensorRole::dense_ffn: return "dense_ffn";
    case TensorRole::experts: return "experts";
    case TensorRole::other: return "other";
  }
  return "other";
}

namespace {

class Binder {
 public:
  Binder(const gguf::File& file) : file_(file) {}

  // A matrix with rows of n_cols elements and n_rows rows in all (ne1 * ne2 for 3-D tensors).
  WeightView matrix(const std::string& name, int64_t n_cols, int64_t n_rows, bool required = true) const {
    const gguf::TensorInfo* t = file_.find_tensor(name);
    if (!t) {
      if (required) throw Error(file_.path() + ": missing tensor '" + name + "'");
      return {};
    }
    if (!kernels::has_kernels(t->type))
      throw Error(file_.path() + ": tensor '" + name + "' has type " + type_name(t->type) +
                  ", which Strata cannot compute with yet");
    if (t->shape[0] != n_cols || t->n_rows() != n_rows)
      throw Error(file_.path() + ": tensor '" + name + "' has shape " + shape_string(*t) + ", expected " +
                  std::to_string(n_cols) + " x " + std::to_string(n_rows) + " elements");
    WeightView v;
    v.type = t->type;
    v.data = file_.tensor_data(*t);
    v.n_cols = n_cols;
    v.n_rows = n_rows;
    v.row_bytes = row_bytes(t->type, n_cols);
    return v;
  }

  // n_rows > 1: per-expert biases, row after row.
  std::vector<float> vector(const std::string& name, int64_t n, int64_t n_rows, bool required = true) const {
    WeightView v = matrix(name, n, n_rows, required);
    if (v.empty()) return {};
    return ops::to_floats(v);
  }

 private:
  static std::string shape_string(const gguf::TensorInfo& t) {
    std::string s;
    for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? " x " : "") + std::to_string(t.shape[i]);
    return s;
  }
  const gguf::File& file_;
};

}  // namespace

ModelWeights bind_weights(const gguf::File& file, const ModelConfig& c) {
  Binder b(file);
  ModelWeights w;
  w.layers.resize(size_t(c.n_layer));
  for (const ExpectedTensor& t : expected_tensors(c)) {
    const TensorEntry& e = *t.entry;
    if (e.is_vector) {
      std::vector<float> v = b.vector(t.name, t.n_cols, t.n_rows, t.required);
      if (e.layer_vector) w.layers[size_t(t.layer)].*e.layer_vector = std::move(v);
      else w.*e.model_vector = std::move(v);
    } else {
      WeightView v = b.matrix(t.name, t.n_cols, t.n_rows, t.required);
      if (e.layer_matrix) w.layers[size_t(t.layer)].*e.layer_matrix = v;
      else w.*e.model_matrix = v;
    }
  }
  if (w.output.empty()) w.output = w.token_embd;  // tied embeddings
  return w;
}

}  // namespace strata
