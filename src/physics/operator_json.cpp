// operator_from_json: the one place that knows every operator class by name.
#include <torch/torch.h>

#include "core/error.hpp"
#include "physics/blur.hpp"
#include "physics/composition.hpp"
#include "physics/degradation.hpp"
#include "physics/downsampling.hpp"
#include "physics/identity.hpp"
#include "physics/inpainting.hpp"
#include "physics/jpeg.hpp"
#include "physics/matrix.hpp"
#include "physics/phase_retrieval.hpp"
#include "physics/serialize.hpp"
#include "physics/square_root.hpp"

namespace ud2m::physics {

namespace {
LinearOperatorPtr linear_from_json(const nlohmann::json& j) {
  auto op = std::dynamic_pointer_cast<const LinearOperator>(operator_from_json(j));
  UD2M_CHECK(op != nullptr, "a composition can only hold linear operators, not '{}'",
             json_get<std::string>(j, "type", "operator"));
  return op;
}
}  // namespace

OperatorPtr operator_from_json(const nlohmann::json& j) {
  const auto type = json_get<std::string>(j, "type", "operator description");
  if (type == "identity") return std::make_shared<Identity>();
  if (type == "circular_blur") return CircularBlur::from_json(j);
  if (type == "conv_blur") return ConvBlur::from_json(j);
  if (type == "downsampling") return Downsampling::from_json(j);
  if (type == "inpainting") return Inpainting::from_json(j);
  if (type == "jpeg") return JpegCompression::from_json(j);
  if (type == "phase_retrieval") return PhaseRetrieval::from_json(j);
  if (type == "matrix") return MatrixOperator::from_json(j);
  if (type == "square_root")
    return std::make_shared<SquareRoot>(operator_from_json(json_get<nlohmann::json>(j, "of", "square_root")));
  if (type == "composition")
    return std::make_shared<Composition>(linear_from_json(json_get<nlohmann::json>(j, "outer", "composition")),
                                         linear_from_json(json_get<nlohmann::json>(j, "inner", "composition")));
  fail("unknown operator type '{}' in the operator description", type);
}

}  // namespace ud2m::physics
