#include "physics/composition.hpp"

#include "core/error.hpp"

namespace ud2m::physics {

Composition::Composition(LinearOperatorPtr outer, LinearOperatorPtr inner)
    : outer_(std::move(outer)), inner_(std::move(inner)) {
  UD2M_CHECK(outer_ && inner_, "a composition needs two operators");
}

nlohmann::json Composition::to_json() const {
  return {{"type", name()}, {"outer", outer_->to_json()}, {"inner", inner_->to_json()}};
}

}  // namespace ud2m::physics
