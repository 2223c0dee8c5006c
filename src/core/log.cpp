#include "core/log.hpp"

namespace ud2m::log {
Level& threshold() {
  static Level level = Level::info;
  return level;
}
}  // namespace ud2m::log
