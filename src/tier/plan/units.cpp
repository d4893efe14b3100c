// Unit extraction (units.h): tensor names and sizes to units of placement, and a decision about
// units back to tensors.
#include "tier/plan/units.h"

#include <algorithm>
#include <array>
#include <string>

#include "model/catalogue.h"
#include "tier/stream/expert_streamer.h"
#include "util/error.h"

namespace strata::tier {

int64_t stream_piece_rows(uint64_t row_bytes, int64_t n_rows, uint64_t piece_bytes) {
  constexpr uint64_t kPage = 4096;
  constexpr int64_t kRowBlock = 16;
  const uint64_t room = piece_bytes > 2 * kPage ? piece_bytes - 2 * kPage : piece_bytes;
  int64_t rows = std::max<int64_t>(1, int64_t(room / std::max<uint64_t>(1, row_bytes)));
  if (rows >= kRowBlock) rows = rows / kRowBlock * kRowBlock;
  return std::max<int64_t>(1, std::min(rows, n_rows));
}

TensorRole classify_tensor(std::string_view name, int* layer) { return tensor_role(name, layer); }

namespace {

uint64_t tensor_row_bytes(const gguf::TensorInfo& t) { return t.n_bytes / uint64_t(std::max<int64_t>(1, t.n_rows())); }
// The largest read of one streamed piece of a matrix, and how many pieces it streams in.
uint64_t stream_piece_bytes(const gguf::TensorInfo& t) {
  const uint64_t rows = uint64_t(stream_piece_rows(tensor_row_bytes(t), t.n_rows()));
  return (rows * tensor_row_bytes(t) + 4095) / 4096 * 4096 + 4096;
}
int stream_pieces(const gguf::TensorInfo& t) {
  const int64_t rows = stream_piece_rows(tensor_row_bytes(t), t.n_rows());
  return int((std::max<int64_t>(1, t.n_rows()) + rows - 1) / rows);
}

// N of a "blk.N.*" name, or -1: the catalogue's layer for names it knows, but also for the
// nextn layers' own tensors (blk.N.nextn.eh_proj.weight, ...), which it does not.
int block_index(std::string_view name) {
  if (!name.starts_with("blk.")) return -1;
  int n = 0, digits = 0;
  for (size_t i = 4; i < name.size() && name[i] != '.'; ++i, ++digits) {
    if (name[i] < '0' || name[i] > '9' || digits >= 7) return -1;
    n = n * 10 + (name[i] - '0');
  }
  return digits > 0 ? n : -1;
}

}  // namespace

UnitTable extract_units(std::span<const gguf::TensorInfo> tensors, const ModelConfig& config,
                        const std::vector<std::vector<double>>& expert_probability, uint64_t file_bytes) {
  UnitTable p;
  p.n_layer = config.n_layer;
  p.k = config.n_expert_used;
  const size_t L = size_t(config.n_layer);
  p.layer_bytes.assign(L, 0.0);
  p.layer_elems.assign(L, 0.0);
  p.expert_bytes.assign(L, 0.0);
  p.expert_elems.assign(L, 0.0);
  p.core_bytes.assign(L, 0.0);
  p.core_elems.assign(L, 0.0);
  std::vector<std::array<double, kNumFfnParts>> dense_elems(L);
  std::vector<double> expert_slice(L, 0.0), expert_slice_elems(L, 0.0);
  std::vector<std::array<uint64_t, kNumFfnParts>> dense_bytes(L);  // per FFN matrix (FfnPart)
  std::vector<std::array<int, kNumFfnParts>> dense_pieces(L);
  std::vector<bool> has_experts(L, false);
  // Expert tensors of each layer (file offset, slice bytes), for the slot an expert needs.
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> expert_tensors(L);
  bool tied = true;
  for (const auto& t : tensors)
    if (classify_tensor(t.name, nullptr) == TensorRole::output) tied = false;

  for (const auto& t : tensors) {
    int layer = -1;
    TensorPlacement tp;
    tp.name = t.name;
    tp.role = classify_tensor(t.name, &layer);
    tp.layer = layer;
    tp.n_bytes = t.n_bytes;
    tp.file_offset = t.file_offset;
    p.model_bytes += t.n_bytes;
    // A multi-token-prediction layer after the trunk: never read (ModelConfig::n_layer_nextn).
    const int block = block_index(t.name);
    if (block >= int(L) && block < int(L) + config.n_layer_nextn) {
      p.nextn_bytes += t.n_bytes;
      continue;
    }
    if (layer >= int(L))
      throw Error("plan: tensor " + t.name + " names layer " + std::to_string(layer) + " but the model has " +
                  std::to_string(L) + " layers");
    const size_t l = size_t(layer);
    switch (tp.role) {
      case TensorRole::embedding:
        if (tied) {
          tp.placement = Placement::resident;  // it is the output head too
          p.mandatory_bytes += t.n_bytes;
          p.head_bytes.push_back(double(t.n_bytes));
          p.head_flops += 2.0 * double(t.n_elements);
        } else {
          tp.placement = Placement::mapped;
          p.mapped_bytes += t.n_bytes;
          p.embd_row_bytes = double(t.n_bytes) / double(std::max<int64_t>(1, t.n_rows()));
        }
        break;
      case TensorRole::experts: {
        if (layer < 0 || config.n_expert <= 0)
          throw Error("plan: expert tensor " + t.name + " in a model without experts (expert_count 0)");
        if (t.shape.empty() || t.shape.back() != config.n_expert || t.n_bytes % uint64_t(config.n_expert) != 0)
          throw Error("plan: expert tensor " + t.name + ": last dimension " +
                      std::to_string(t.shape.empty() ? 0 : t.shape.back()) + ", expected expert_count " +
                      std::to_string(config.n_expert));
        tp.placement = Placement::streamed;
        tp.slice_bytes = t.n_bytes / uint64_t(config.n_expert);
        has_experts[l] = true;
        expert_slice[l] += double(tp.slice_bytes);
        expert_tensors[l].push_back({t.file_offset, tp.slice_bytes});
        expert_slice_elems[l] += double(t.n_elements) / config.n_expert;
        break;
      }
      case TensorRole::dense_ffn:
        // Every FFN matrix the catalogue gives a part streams: a dense layer's gate/up/down, a
        // MoE layer's shared expert. Anything else of the role stays with the mandatory set.
        if (layer >= 0 && tensor_ffn_part(t.name) >= 0 && t.n_bytes > 0) {
          tp.placement = Placement::streamed;
          dense_bytes[l][size_t(tensor_ffn_part(t.name))] = t.n_bytes;
          dense_pieces[l][size_t(tensor_ffn_part(t.name))] = stream_pieces(t);
          dense_elems[l][size_t(tensor_ffn_part(t.name))] = double(t.n_elements);
          p.dense_piece_bytes = std::max(p.dense_piece_bytes, stream_piece_bytes(t));
          p.layer_bytes[l] += double(t.n_bytes);
          p.layer_elems[l] += double(t.n_elements);
          break;
        }
        [[fallthrough]];
      default:  // attention, norms, router, output head, small tensors: every token, always resident
        tp.placement = Placement::resident;
        p.mandatory_bytes += t.n_bytes;
        if (layer >= 0) {
          p.layer_bytes[l] += double(t.n_bytes);
          p.layer_elems[l] += double(t.n_elements);
          p.core_bytes[l] += double(t.n_bytes);
          p.core_elems[l] += double(t.n_elements);
        } else if (tp.role == TensorRole::output || tp.role == TensorRole::norm) {
          p.head_bytes.push_back(double(t.n_bytes));
          p.head_flops += 2.0 * double(t.n_elements);
        }
        break;
    }
    p.tensors.push_back(std::move(tp));
  }

  if (!expert_probability.empty() && expert_probability.size() != L)
    throw Error("plan: expert probabilities for " + std::to_string(expert_probability.size()) +
                " layers, the model has " + std::to_string(L));
  const double prior = config.n_expert > 0 ? double(config.n_expert_used) / config.n_expert : 0.0;
  // A pinned expert takes a whole slot of the expert streamer: its layer's experts' aligned
  // ranges (in a Q4_K_M model some layers' experts are Q6_K and larger). Pool slots fit the
  // largest of any layer.
  std::vector<uint64_t> expert_slot(L, 0);
  for (size_t l = 0; l < L; ++l) {
    if (!has_experts[l]) continue;
    if (expert_tensors[l].size() != 3)
      throw Error("plan: layer " + std::to_string(l) + " has " + std::to_string(expert_tensors[l].size()) +
                  " expert tensors, expected gate, up and down");
    uint64_t offset[3], slice[3];
    for (size_t i = 0; i < 3; ++i) offset[i] = expert_tensors[l][i].first, slice[i] = expert_tensors[l][i].second;
    expert_slot[l] =
        ExpertStreamer::layer_slot_bytes(offset, slice, config.n_expert, file_bytes ? file_bytes : UINT64_MAX);
    p.expert_slot_bytes = std::max(p.expert_slot_bytes, expert_slot[l]);
  }
  for (size_t l = 0; l < L; ++l) {
    for (int part = 0; part < kNumFfnParts; ++part)
      if (dense_bytes[l][size_t(part)] > 0) {
        p.units.push_back({UnitKind::dense_ffn, int(l), -1, dense_bytes[l][size_t(part)], 1.0, 0.0, false, part});
        p.units.back().memory_bytes = dense_bytes[l][size_t(part)];
        p.unit_pieces.push_back(dense_pieces[l][size_t(part)]);
        p.unit_elems.push_back(dense_elems[l][size_t(part)]);
      }
    if (!has_experts[l]) continue;
    for (int e = 0; e < config.n_expert; ++e) {
      double pe = prior;
      if (!expert_probability.empty()) {
        if (expert_probability[l].size() != size_t(config.n_expert))
          throw Error("plan: layer " + std::to_string(l) + " has " + std::to_string(expert_probability[l].size()) +
                      " expert probabilities, expected " + std::to_string(config.n_expert));
        pe = std::clamp(expert_probability[l][size_t(e)], 0.0, 1.0);
      }
      p.units.push_back({UnitKind::expert, int(l), e, uint64_t(expert_slice[l]), pe, 0.0, false});
      p.units.back().memory_bytes = expert_slot[l];
      p.unit_pieces.push_back(0);
      p.unit_elems.push_back(expert_slice_elems[l]);
      p.expert_bytes[l] += pe * expert_slice[l];
      p.expert_elems[l] += pe * expert_slice_elems[l];
    }
  }
  return p;
}

const char* tier_name(Tier t) {
  switch (t) {
    case Tier::vram:
      return "VRAM";
    case Tier::host:
      return "host RAM";
    case Tier::ssd:
      return "SSD";
  }
  return "?";
}

const char* processor_name(Processor p) { return p == Processor::gpu ? "GPU" : "CPU"; }

void place_tensors(const ModelConfig& config, uint64_t mandatory_bytes, bool fits, PlanPlacement& plan) {
  // Unit residency per (layer, expert), for the tensors.
  std::vector<std::array<bool, kNumFfnParts>> dense_res(size_t(config.n_layer));
  std::vector<std::vector<int>> experts_res(size_t(config.n_layer));
  plan.resident_weight_bytes = mandatory_bytes;
  for (const auto& u : plan.units) {
    if (u.kind == UnitKind::dense_ffn) {
      ++plan.n_dense_units;
      if (u.resident) dense_res[size_t(u.layer)][size_t(u.part)] = true, ++plan.n_dense_resident;
    } else {
      ++plan.n_expert_units;
      if (u.resident) {
        experts_res[size_t(u.layer)].push_back(u.expert);
        ++plan.n_expert_resident;
        plan.expert_cache_bytes += fits ? u.n_bytes : u.memory_bytes;
      }
    }
    if (u.resident)
      plan.resident_weight_bytes += fits ? u.n_bytes : u.memory_bytes;
    else
      plan.streamed_weight_bytes += u.n_bytes;
  }
  plan.n_expert_cache = plan.n_expert_resident;
  std::vector<RoleSummary> roles(size_t(TensorRole::other) + 1);
  for (size_t r = 0; r < roles.size(); ++r) roles[r].role = TensorRole(r);
  for (auto& t : plan.tensors) {
    if (t.role == TensorRole::dense_ffn && t.placement == Placement::streamed) {
      t.placement =
          dense_res[size_t(t.layer)][size_t(tensor_ffn_part(t.name))] ? Placement::resident : Placement::streamed;
    } else if (t.role == TensorRole::experts) {
      t.resident_experts = experts_res[size_t(t.layer)];
      t.placement = int(t.resident_experts.size()) == config.n_expert ? Placement::resident : Placement::streamed;
    }
    t.resident_bytes = t.role == TensorRole::experts        ? t.slice_bytes * t.resident_experts.size()
                       : t.placement == Placement::resident ? t.n_bytes
                                                            : 0;
    RoleSummary& s = roles[size_t(t.role)];
    if (t.placement == Placement::mapped)
      s.mapped_bytes += t.n_bytes;
    else
      s.resident_bytes += t.resident_bytes, s.streamed_bytes += t.n_bytes - t.resident_bytes;
  }
  for (const auto& s : roles)
    if (s.resident_bytes + s.streamed_bytes + s.mapped_bytes > 0) plan.roles.push_back(s);
}

}  // namespace strata::tier
